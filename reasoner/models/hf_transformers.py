"""transformers `generate`: the fallback that needs no serving engine, and the policy that the
training stages load. Requests with equal sampling settings go through one padded batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from reasoner.models.base import Generator
from reasoner.models.config import ModelConfig
from reasoner.types import Completion, FinishReason, GenerationRequest, SamplingParams, TokenLogprob


class TransformersGenerator(Generator):
    def __init__(self, model_path: str, config: ModelConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.description = f"transformers:{model_path}"
        self.torch = torch
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = getattr(torch, config.dtype) if config.dtype != "auto" else "auto"
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model.eval()
        self._adapter: str | None = None

    def _prompt_text(self, request: GenerationRequest) -> str:
        if request.messages is None:
            assert request.prompt is not None
            return request.prompt
        text = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in request.messages],
            add_generation_prompt=True,
            tokenize=False,
        )
        return str(text)

    def _use_adapter(self, adapter: str | None) -> None:
        if adapter == self._adapter:
            return
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model = self.model.unload()
        if adapter is not None:
            self.model = PeftModel.from_pretrained(self.model, adapter)
        self._adapter = adapter

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in requests]

        # Per-request seeds would split a batch into single prompts; a batch is seeded with its
        # first request's seed instead, so samples here depend on batch composition.
        def key(i: int) -> tuple[str, str]:
            return requests[i].adapter or "", repr(
                dataclasses.replace(requests[i].sampling, seed=None)
            )

        for _, group in groupby(sorted(range(len(requests)), key=key), key=key):
            indices = list(group)
            self._use_adapter(requests[indices[0]].adapter)
            size = self.config.batch_size
            for start in range(0, len(indices), size):
                batch = indices[start : start + size]
                prompts = [self._prompt_text(requests[i]) for i in batch]
                for i, completions in zip(
                    batch, self._generate_batch(prompts, requests[batch[0]].sampling), strict=True
                ):
                    results[i] = completions
        return results

    def _generate_batch(self, prompts: list[str], s: SamplingParams) -> list[list[Completion]]:
        torch = self.torch
        inputs = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        )
        if s.seed is not None:
            torch.manual_seed(s.seed)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=s.max_tokens,
            num_return_sequences=s.n,
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=s.logprobs is not None,
        )
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.stop:
            kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        width = inputs["input_ids"].shape[1]
        new_tokens = out.sequences[:, width:]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        step_logprobs = None
        if s.logprobs is not None:
            step_logprobs = torch.stack(
                [torch.log_softmax(score.float(), dim=-1) for score in out.scores], dim=1
            )
        eos_ids = self._eos_ids()
        results: list[list[Completion]] = []
        for p, prompt_length in enumerate(prompt_lengths):
            completions = []
            for k in range(s.n):
                row = p * s.n + k
                completions.append(
                    self._completion(
                        new_tokens[row],
                        int(prompt_length),
                        s,
                        eos_ids,
                        None if step_logprobs is None else step_logprobs[row],
                    )
                )
            results.append(completions)
        return results

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return {int(i) for i in ids if i is not None} | {int(self.tokenizer.pad_token_id)}

    def _completion(
        self, tokens: Any, prompt_length: int, s: SamplingParams, eos_ids: set[int], logprobs: Any
    ) -> Completion:
        ids = tokens.tolist()
        length = next((i for i, t in enumerate(ids) if t in eos_ids), None)
        finish: FinishReason = "stop" if length is not None else "length"
        ids = ids[: length if length is not None else len(ids)]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in s.stop:
            if stop in text:
                text, finish = text[: text.index(stop)], "stop"
        picked = None
        if logprobs is not None:
            picked = tuple(
                TokenLogprob(self.tokenizer.decode([t]), float(logprobs[j, t]))
                for j, t in enumerate(ids)
            )
        return Completion(text, finish, prompt_length, len(ids), picked)
