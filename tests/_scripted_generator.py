"""A scripted Generator for fast tests of strategies' control flow (which requests go out in
which call, when a loop stops, how usage adds up). It generates nothing: a test-supplied
function writes each request's replies. Real generation is tested in the slow tier."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reasoner.models.base import Generator
from reasoner.types import Completion, GenerationRequest

#: (request, index of the engine call) -> the texts of the request's n samples
Script = Callable[[GenerationRequest, int], list[str]]


def request_text(request: GenerationRequest) -> str:
    if request.messages is not None:
        return "\n".join(m.content for m in request.messages)
    return request.prompt or ""


class ScriptedGenerator(Generator):
    description = "scripted"

    def __init__(self, script: Script) -> None:
        self.script = script
        #: the batch size of each call, in call order, and every request sent
        self.calls: list[int] = []
        self.batches: list[list[GenerationRequest]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        call = len(self.calls)
        self.calls.append(len(requests))
        self.batches.append(list(requests))
        results = []
        for request in requests:
            texts = self.script(request, call)
            assert len(texts) == request.sampling.n, "a script must reply with n texts"
            # token counts are word counts: deterministic, and distinct per prompt
            prompt_tokens = len(request_text(request).split())
            results.append(
                [Completion(text, "stop", prompt_tokens, len(text.split()) or 1) for text in texts]
            )
        return results
