"""A reward model as the verifier: a transformers sequence classifier scores the whole answer
(outcome RM) or every step prefix (process RM), in batches. `model` is a model name or folder,
or the adapter folder `reasoner train reward` writes.

The score is the reward in [0, 1]; `threshold` only decides which side of correct/incorrect the
Verdict falls on, so search loops can rank by score while eval still gets a verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from reasoner.errors import ModelError
from reasoner.models.dtype import resolve_dtype
from reasoner.models.resolve import ResolvedModel, resolve_model
from reasoner.types import Completion, Problem, Verdict, VerdictStatus
from reasoner.verifiers.base import Verifier

Aggregate = Literal["min", "last", "mean"]


def _aggregate(scores: list[float], how: Aggregate) -> float:
    """A process RM's answer score: its weakest step (min), its final prefix, or the mean."""
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    return sum(scores) / len(scores)


def load_sequence_classifier(
    model: str, dtype: str = "auto", trainable: bool = False
) -> tuple[Any, Any, ResolvedModel]:
    """A one-logit sequence classifier and its tokenizer, from a model name or folder, or from a
    PEFT adapter folder (what `reasoner train reward` writes): its base model gets a fresh head
    that the adapter's saved head then replaces. A served adapter is merged for speed."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    adapter = Path(model) if (Path(model) / "adapter_config.json").is_file() else None
    if adapter is not None:
        base = json.loads((adapter / "adapter_config.json").read_text()).get(
            "base_model_name_or_path"
        )
        if not base:
            raise ModelError(f"{adapter}/adapter_config.json: no base_model_name_or_path")
        resolved = resolve_model(str(base))
    else:
        resolved = resolve_model(model)
    tokenizer: Any = AutoTokenizer.from_pretrained(resolved.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if dtype == "auto":  # as the engine decides: bf16 only where this machine has its kernels
        dtype = resolve_dtype("auto", "inference").dtype
    loaded: Any = AutoModelForSequenceClassification.from_pretrained(
        resolved.path,
        dtype=getattr(torch, dtype),
        **({"num_labels": 1} if adapter is not None or trainable else {}),
    )
    loaded.config.pad_token_id = tokenizer.pad_token_id
    if adapter is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, str(adapter), is_trainable=trainable)
        if not trainable:
            loaded = loaded.merge_and_unload()
    return loaded, tokenizer, resolved


class RewardModelVerifier(Verifier):
    name = "reward-model"
    #: scores the question and the answer; it never reads a gold answer
    reads_gold = False

    def __init__(
        self,
        model: str,
        threshold: float = 0.5,
        step_separator: str | None = None,
        aggregate: Aggregate = "min",
        batch_size: int = 8,
        max_length: int = 2048,
        dtype: str = "auto",
        timeout_s: float | None = None,  # scoring is in-process; kept for the contract
    ) -> None:
        self.timeout_s = timeout_s
        import torch

        self.torch = torch
        self.model, self.tokenizer, _ = load_sequence_classifier(model, dtype)
        self.tokenizer.padding_side = "left"
        self.model.eval()
        self.threshold = threshold
        self.step_separator = step_separator
        self.aggregate = aggregate
        self.batch_size = batch_size
        self.max_length = max_length

    def _text(self, question: str, answer: str) -> str:
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(chat, tokenize=False))
        return f"{question}\n\n{answer}"

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Reward in [0, 1]: sigmoid of a single logit, or P(label 1) for two labels."""
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
            )
            with self.torch.inference_mode():
                logits = self.model(**batch).logits.float()
            if logits.shape[-1] == 1:
                probs = self.torch.sigmoid(logits[:, 0])
            else:
                probs = self.torch.softmax(logits, dim=-1)[:, 1]
            scores.extend(float(p) for p in probs)
        return scores

    def _steps(self, answer: str) -> list[str]:
        if self.step_separator is None:
            return [answer]
        parts = [p for p in answer.split(self.step_separator) if p.strip()]
        return [self.step_separator.join(parts[: i + 1]) for i in range(len(parts))] or [answer]

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        return self.verify_batch([(problem, completion)])[0]

    def verify_batch(self, pairs: Sequence[tuple[Problem, Completion]]) -> list[Verdict]:
        prefixes = [self._steps(c.text) for _, c in pairs]
        texts = [
            self._text(p.question, step)
            for (p, _), steps in zip(pairs, prefixes, strict=True)
            for step in steps
        ]
        try:
            flat = self.score_texts(texts)
        except Exception as exc:  # a failing model is the verifier failing
            return [Verdict("error", 0.0, f"reward model failed: {exc}") for _ in pairs]
        verdicts, position = [], 0
        for steps in prefixes:
            step_scores = flat[position : position + len(steps)]
            position += len(steps)
            reward = _aggregate(step_scores, self.aggregate)
            status: VerdictStatus = "correct" if reward >= self.threshold else "incorrect"
            verdicts.append(
                Verdict(
                    status,
                    reward,
                    f"reward {reward:.3f} (threshold {self.threshold})",
                    None,
                    {"step_scores": step_scores},
                )
            )
        return verdicts
