"""transformers `generate`: the fallback that needs no serving engine, and the policy that the
training stages load. Requests with equal sampling settings go through one padded batch."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from reasoner.errors import ModelError
from reasoner.models.base import Generator, chat_prompt_text
from reasoner.models.config import ModelConfig
from reasoner.models.context import context_overflow
from reasoner.models.dtype import resolve_dtype
from reasoner.types import (
    ChatMessage,
    Completion,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenLogprob,
)


class TransformersGenerator(Generator):
    def __init__(self, model_path: str, config: ModelConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        choice = resolve_dtype(config.dtype)  # auto: bf16 only where there are bf16 kernels
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, choice.dtype))
        self._setup(model, tokenizer, config, f"transformers:{model_path}")
        self.dtype_choice = choice

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, config: ModelConfig, description: str = ""
    ) -> TransformersGenerator:
        """Generate with a model already in memory (a policy being trained samples with its
        current weights). Requests then take no adapter of their own: `adapter=None` means
        the model as given, adapter included if it has one."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, config, description or "transformers:in-memory")
        self._fixed = True
        return self

    def _setup(self, model: Any, tokenizer: Any, config: ModelConfig, description: str) -> None:
        import torch

        self.config = config
        self.description = description
        self.torch = torch
        self.tokenizer: Any = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model: Any = model
        self.model.eval()
        self._fixed = False
        # adapter folder (path, weights mtime) -> PEFT adapter name: each is loaded once and
        # switched to per batch; a folder rewritten in place (a loop's next round) reloads
        self._adapter_names: dict[tuple[str, int], str] = {}

    def _prompt_text(self, request: GenerationRequest) -> str:
        if request.messages is None:
            assert request.prompt is not None
            return request.prompt
        return self.render_chat(request.messages)

    def prompt_overflow(self, request: GenerationRequest) -> str | None:
        return context_overflow(self.tokenizer, request, self.config.max_model_len)

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        # prompts are tokenized here without special tokens: the template's text is complete
        return chat_prompt_text(self.tokenizer, messages, adds_special=False)

    def _use_adapter(self, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
        """Activate `adapter` (None: the base model) for the next generate call."""
        from peft import PeftModel

        if self._fixed:
            if adapter is not None:
                raise ModelError(
                    "this generator samples from a model being trained; it takes no per-request "
                    f"adapter (got {adapter})"
                )
            return contextlib.nullcontext()
        if adapter is None:
            if isinstance(self.model, PeftModel):
                return self.model.disable_adapter()
            return contextlib.nullcontext()
        folder = Path(adapter)
        weights = folder / "adapter_model.safetensors"
        if not (folder / "adapter_config.json").is_file():
            raise ModelError(
                f"adapter {adapter}: not a PEFT adapter folder (no adapter_config.json)"
            )
        key = (str(folder.resolve()), weights.stat().st_mtime_ns if weights.is_file() else 0)
        name = self._adapter_names.get(key)
        if name is None:
            name = f"adapter{len(self._adapter_names) + 1}"
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(adapter, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, adapter, adapter_name=name)
            self.model.eval()
            self._adapter_names[key] = name
        self.model.set_adapter(name)
        return contextlib.nullcontext()

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
            with self._use_adapter(requests[indices[0]].adapter):
                size = self.config.batch_size
                for start in range(0, len(indices), size):
                    batch = indices[start : start + size]
                    prompts = [self._prompt_text(requests[i]) for i in batch]
                    sampling = requests[batch[0]].sampling
                    for i, completions in zip(
                        batch, self._generate_batch(prompts, sampling), strict=True
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
