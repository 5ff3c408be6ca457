"""What a chat request lacks compared with a benchmark problem, and how a Trace becomes a reply.

A chat has no gold answer, yet self-consistency still needs each sample's final answer to vote
on. `ReferenceFreeVerifier` extracts it with the named verifier's `extract_answer`, and compares
answers with that verifier's own equivalence; when the caller does send a reference answer, the real
verifier checks against it.
"""

from __future__ import annotations

from collections.abc import Sequence

from reasoner.prompts import PromptTemplate
from reasoner.types import ChatMessage, Completion, Problem, Trace, Verdict
from reasoner.verifiers.base import Verifier


class ReferenceFreeVerifier(Verifier):
    """The named verifier where the problem has a reference answer; otherwise its answer
    extraction alone, as a verdict of `error` (nothing was checked) that carries the answer."""

    name = "reference-free"

    def __init__(self, inner: Verifier) -> None:
        self.inner = inner
        self.max_concurrency = inner.max_concurrency
        self.reads_gold = inner.reads_gold
        self.timeout_s = inner.timeout_s

    def unwrapped(self) -> Verifier:
        return self.inner.unwrapped()

    def extract_answer(self, text: str) -> str | None:
        return self.inner.extract_answer(text)

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        if problem.answer is not None:
            return self.inner.verify(problem, completion)
        if not self.inner.can_extract_answers():
            return Verdict(
                "error", 0.0, f"verifier {self.inner.name!r} needs a reference answer (`answer`)"
            )
        answer = self.inner.extract_answer(completion.text)
        details = {"extracted": answer, "reference": None}
        feedback = "no reference answer: the answer was extracted, not checked"
        return Verdict("error", 0.0, feedback, answer, details)

    def verify_batch(self, pairs: Sequence[tuple[Problem, Completion]]) -> list[Verdict]:
        if pairs and all(p.answer is not None for p, _ in pairs):
            return self.inner.verify_batch(pairs)
        return [self.verify(p, c) for p, c in pairs]

    def equivalent(self, problem: Problem, a: str, b: str) -> bool:
        return self.inner.equivalent(problem, a, b)

    def close(self) -> None:
        """The wrapped verifier is shared across requests and closed by the server."""


class ChatPrompt(PromptTemplate):
    """The chat exactly as the client sent it (from `problem.metadata["chat"]`)."""

    def render(self, problem: Problem, **extra: object) -> tuple[ChatMessage, ...]:
        chat = problem.metadata.get("chat")
        if chat is None:
            return super().render(problem, **extra)
        return tuple(chat)


CHAT_PROMPT = ChatPrompt(name="chat", system=None, user="{{ question }}")


def final_completion(trace: Trace) -> Completion | None:
    """The completion behind the strategy's answer: the sample whose verdict the strategy chose
    (the first of the winning cluster, for self-consistency), else the last sample that gave
    the predicted answer, else the last sample."""
    pairs = [
        (c, v)
        for step in trace.steps
        for c, v in zip(step.completions, step.verdicts, strict=False)
    ]
    for completion, verdict in pairs:
        if verdict is trace.verdict:
            return completion
    if trace.prediction is not None:
        for completion, verdict in reversed(pairs):
            if verdict.answer == trace.prediction:
                return completion
    completions = [c for step in trace.steps for c in step.completions]
    return completions[-1] if completions else None
