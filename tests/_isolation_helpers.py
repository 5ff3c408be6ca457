"""Functions the spawned workers run in tests: they must be importable by name in a fresh
interpreter, which a test module's closures and lambdas are not."""

from __future__ import annotations

import os
import time

from reasoner.types import Completion, Problem
from reasoner.verifiers.math_answer import MathAnswerVerifier


def hang(*args: object) -> None:
    time.sleep(60)


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def verify_status(gold: str, text: str) -> str:
    """Builds a verifier inside a ProcessPool worker, where it must start its own workers."""
    with MathAnswerVerifier(timeout_s=10.0, workers=1) as verifier:
        completion = Completion(text, "stop", prompt_tokens=0, completion_tokens=0)
        return verifier.verify(Problem(id="p", question="q", answer=gold), completion).status
