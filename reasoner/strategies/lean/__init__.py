"""Lean 4 proof search: whole-proof sampling with verification, and best-first tactic search
against a tactic environment (the Lean REPL's proof states, or lean-dojo's Dojo)."""

from __future__ import annotations

from reasoner.strategies.lean.best_first import LeanBestFirst
from reasoner.strategies.lean.environment import (
    EnvironmentUnavailable,
    LeanReplEnvironment,
    StartError,
    TacticEnvironment,
    TacticOutcome,
    TacticState,
)
from reasoner.strategies.lean.whole_proof import LeanWholeProof

__all__ = [
    "EnvironmentUnavailable",
    "LeanBestFirst",
    "LeanReplEnvironment",
    "LeanWholeProof",
    "StartError",
    "TacticEnvironment",
    "TacticOutcome",
    "TacticState",
]
