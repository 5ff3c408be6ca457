"""The Generator contract: a batch of requests in, completions out, in one engine call.

Search loops call `generate` once per step with every problem's and every node's request, so
the engine sees large batches and shared prefixes. `generate_stream` yields each request's
completions as soon as that request finishes, which lets the runner write a finished problem
to disk while the rest of the batch is still decoding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from reasoner.errors import ModelError
from reasoner.models.dtype import DtypeChoice
from reasoner.types import ChatMessage, Completion, GenerationRequest


class Generator:
    #: a short identifier for run manifests, e.g. "vllm:/path/to/model"
    description: str = ""
    #: the weight dtype a local backend resolved (`dtype: auto`) and why; None for a server
    dtype_choice: DtypeChoice | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.generate is Generator.generate and cls.generate_stream is Generator.generate_stream:
            raise TypeError(f"{cls.__name__} must implement generate or generate_stream")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """One list of `request.sampling.n` completions per request, in request order; by
        default collected from `generate_stream` (a backend implements one of the two)."""
        results: list[list[Completion]] = [[] for _ in requests]
        for index, completions in self.generate_stream(requests):
            results[index] = completions
        return results

    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        """(request index, completions) pairs in completion order; one engine call in all. By
        default all at once, when `generate` returns."""
        yield from enumerate(self.generate(requests))

    def prompt_overflow(self, request: GenerationRequest) -> str | None:
        """Why `request`'s prompt does not fit the model's context window, or None when it fits
        or the backend cannot tell (a remote server answers such a request with an error)."""
        return None

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The chat as the raw `prompt=` text this backend would feed the model (template
        applied, assistant turn opened). Step-level search continues a partial answer by
        appending it to this text, which a `messages` request cannot express."""
        raise ModelError(
            f"the {type(self).__name__} backend cannot render chat templates to text; "
            "step-level search needs the vllm or transformers backend (or a local model name)"
        )

    def close(self) -> None:
        """Free the engine (GPU memory, server connections)."""

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chat_prompt_text(tokenizer: Any, messages: Sequence[ChatMessage], adds_special: bool) -> str:
    """`messages` through the tokenizer's chat template, as text. `adds_special`: whether the
    backend tokenizes raw prompts with special tokens; if so, a BOS the template already wrote
    is dropped, or the model would see it twice."""
    text = str(
        tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            tokenize=False,
        )
    )
    bos = getattr(tokenizer, "bos_token", None)
    if adds_special and bos and text.startswith(bos):
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        special = tokenizer("x", add_special_tokens=True)["input_ids"]
        if len(special) > len(plain) and special[0] == tokenizer.bos_token_id:
            text = text[len(bos) :]
    return text
