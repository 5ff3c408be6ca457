"""The Generator contract: a batch of requests in, completions out, in one engine call.

Search loops call `generate` once per step with every problem's and every node's request, so
the engine sees large batches and shared prefixes. `generate_stream` yields each request's
completions as soon as that request finishes, which lets the runner write a finished problem
to disk while the rest of the batch is still decoding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

from reasoner.types import Completion, GenerationRequest


class Generator(ABC):
    #: a short identifier for run manifests, e.g. "vllm:/path/to/model"
    description: str = ""

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """One list of `request.sampling.n` completions per request, in request order."""

    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        """(request index, completions) pairs in completion order; one engine call in all."""
        yield from enumerate(self.generate(requests))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the engine (GPU memory, server connections)."""

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
