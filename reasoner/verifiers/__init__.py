"""Verifiers by name, so configs and CLIs can pick one with a string."""

from __future__ import annotations

from typing import Any

from reasoner.registry import Registry
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.choice import ChoiceVerifier
from reasoner.verifiers.code_exec import ProgramAidedMathVerifier, UnitTestVerifier
from reasoner.verifiers.fol.verifier import FOLVerifier
from reasoner.verifiers.judge import LLMJudgeVerifier
from reasoner.verifiers.lean import LeanVerifier
from reasoner.verifiers.math_answer import MathAnswerVerifier
from reasoner.verifiers.reward import as_reward_fn
from reasoner.verifiers.reward_model import RewardModelVerifier

# The judge takes a `generator=` (it says so with `needs_generator`) and the reward model a
# `model=` keyword from the caller; every verifier takes `timeout_s=`.
VERIFIERS: Registry[type[Verifier]] = Registry.by_name(
    "verifier",
    (
        MathAnswerVerifier,
        ProgramAidedMathVerifier,
        UnitTestVerifier,
        FOLVerifier,
        ChoiceVerifier,
        LeanVerifier,
        LLMJudgeVerifier,
        RewardModelVerifier,
    ),
)


def load(name: str, **kwargs: Any) -> Verifier:
    """A ConfigError (a ValueError), so a typo in a config reads as a bad value with the fix."""
    return VERIFIERS[name](**kwargs)


__all__ = ["VERIFIERS", "Verifier", "as_reward_fn", "load"]
