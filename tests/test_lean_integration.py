"""The Lean verifier against a real REPL and Mathlib. Skipped unless `lake` is on PATH and
REASONER_LEAN_PROJECT / REASONER_LEAN_REPL point at a Mathlib project and a built REPL (see
reasoner.verifiers.lean.INSTALL_INSTRUCTIONS); the first check imports Mathlib (tens of seconds)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from reasoner.types import Completion, Problem
from reasoner.verifiers.lean import LeanVerifier

pytestmark = [
    pytest.mark.skipif(shutil.which("lake") is None, reason="Lean (`lake`) is not installed"),
    pytest.mark.skipif(
        not os.environ.get("REASONER_LEAN_PROJECT") or not os.environ.get("REASONER_LEAN_REPL"),
        reason="set REASONER_LEAN_PROJECT and REASONER_LEAN_REPL to run against a real REPL",
    ),
]

STATEMENT = "theorem two_add_two (x : ℕ) (h₀ : x = 2) : x + x = 4 := by\n"


@pytest.fixture(scope="module")
def verifier() -> Iterator[LeanVerifier]:
    v = LeanVerifier(timeout_s=120.0)
    yield v
    v.close()


def check(verifier: LeanVerifier, statement: str, proof: str) -> str:
    problem = Problem("t", "", metadata={"formal_statement": statement})
    verdict = verifier.verify(problem, Completion(proof, "stop", 0, 0))
    assert verdict.status != "error", verdict.feedback
    return verdict.status


def test_true_theorem_is_accepted(verifier: LeanVerifier) -> None:
    assert check(verifier, STATEMENT, "subst h₀\nrfl") == "correct"


def test_false_theorem_is_rejected(verifier: LeanVerifier) -> None:
    false = "theorem two_add_two_bad (x : ℕ) (h₀ : x = 2) : x + x = 5 := by\n"
    assert check(verifier, false, "subst h₀\nrfl") == "incorrect"


def test_sorry_is_rejected(verifier: LeanVerifier) -> None:
    assert check(verifier, STATEMENT, "sorry") == "incorrect"
