"""A wrapper around a real Generator that records every engine call, so tests can prove a
strategy batches (one call per search step) without faking any generation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from reasoner.models.base import Generator
from reasoner.types import ChatMessage, Completion, GenerationRequest


class CountingGenerator(Generator):
    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.description = inner.description
        #: the batch size of each engine call, in call order
        self.calls: list[int] = []
        self.requests: list[GenerationRequest] = []
        #: completion tokens the engine returned through `generate`
        self.completion_tokens = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.calls.append(len(requests))
        self.requests.extend(requests)
        results = self.inner.generate(requests)
        self.completion_tokens += sum(c.completion_tokens for cs in results for c in cs)
        return results

    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        self.calls.append(len(requests))
        self.requests.extend(requests)
        yield from self.inner.generate_stream(requests)

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """Rendering a template is no engine call."""
        return self.inner.render_chat(messages)

    def close(self) -> None:
        """The wrapped engine belongs to the fixture that made it."""
