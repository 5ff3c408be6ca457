"""The Verifier contract.

A verifier turns (problem, completion) into a Verdict. Loops and trainers only ever see this
interface, so a new checker is one subclass plus a registry entry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from reasoner.types import Completion, Problem, Verdict


class Verifier(ABC):
    name: ClassVar[str]
    #: Whether verdicts come from comparing with the gold (`problem.answer` or the metadata a
    #: manifest declares in `gold_fields`). Such a verifier, shown a blinded problem, can only
    #: say `error`; shown the gold, it is an oracle, so strategies refuse it as a scorer or as
    #: feedback unless the config says `strategy.oracle: true`. True unless a verifier declares
    #: otherwise: a new checker is assumed to need the answer key until it says it does not.
    reads_gold: bool = True
    #: Whether the constructor needs a `generator=` (an LLM judge): callers pass the engine of
    #: the run, server or CLI they are in.
    needs_generator: ClassVar[bool] = False
    #: Whether the completion is a program the verifier runs (python-math, unit-tests), not a
    #: solution whose final answer it reads.
    runs_completion_as_code: ClassVar[bool] = False
    #: Seconds one check may take before its verdict is `error`. Every verifier takes it as the
    #: `timeout_s=` constructor keyword (eval and rescore's `verifier_timeout_s`, the server's
    #: `verifier_timeout_s`, `reasoner verify --timeout`) and keeps it here; None where the
    #: verifier does not bound time itself (a judge's engine or an in-process model does).
    timeout_s: float | None = None

    @abstractmethod
    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        """Never raises for a bad completion or a failing check: that is a Verdict of `error`."""

    def verify_batch(self, pairs: Sequence[tuple[Problem, Completion]]) -> list[Verdict]:
        """Checks run concurrently; subclasses whose checks run in worker processes get
        real parallelism from this default, since each thread only waits on its worker."""
        if len(pairs) <= 1:
            return [self.verify(p, c) for p, c in pairs]
        with ThreadPoolExecutor(max_workers=min(len(pairs), self.max_concurrency)) as pool:
            return list(pool.map(lambda pc: self.verify(*pc), pairs))

    max_concurrency: int = 2

    def extract_answer(self, text: str) -> str | None:
        """The final answer of a completion, read without a reference answer (what a chat
        with no gold votes on); None where there is none. The base reads none: a verifier that
        can overrides this, and `can_extract_answers()` says so before one is built."""
        return None

    @classmethod
    def can_extract_answers(cls) -> bool:
        return cls.extract_answer is not Verifier.extract_answer

    def unwrapped(self) -> Verifier:
        """The verifier whose capabilities this one has: itself, or for a wrapper (Ray tasks,
        the server's reference-free verifier) the verifier it wraps. Ask it, not the wrapper,
        about class-level capabilities such as `runs_completion_as_code`."""
        return self

    def equivalent(self, problem: Problem, a: str, b: str) -> bool:
        """Whether two extracted answers are the same answer (for majority voting)."""
        return a.strip() == b.strip()

    def close(self) -> None:  # noqa: B027 - optional hook, most verifiers hold nothing
        """Release worker processes; a verifier stays usable after close (workers restart)."""

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
