"""Serve every request of a run through one PEFT adapter.

Strategies build their requests without knowing about adapters; wrapping the generator is what
lets `model.adapter=...` (and each round of `reasoner iterate`) put a freshly trained adapter
into the running engine without touching any strategy or restarting the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from reasoner.models.base import Generator
from reasoner.types import Completion, GenerationRequest


class AdapterGenerator(Generator):
    def __init__(self, inner: Generator, adapter: str) -> None:
        self.inner = inner
        self.adapter = adapter
        self.description = f"{inner.description}+adapter:{adapter}"
        self.dtype_choice = inner.dtype_choice

    def with_adapter(self, requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        """`requests` with this adapter on each that names none of its own."""
        return [
            r if r.adapter is not None else dataclasses.replace(r, adapter=self.adapter)
            for r in requests
        ]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        return self.inner.generate(self.with_adapter(requests))

    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        yield from self.inner.generate_stream(self.with_adapter(requests))

    def prompt_overflow(self, request: GenerationRequest) -> str | None:
        return self.inner.prompt_overflow(request)

    def close(self) -> None:
        self.inner.close()
