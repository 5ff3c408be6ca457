"""Every registered verifier loads by name with the keyword the CLI and eval pass, and declares
its capabilities on the class, where callers read them instead of switching on names."""

from __future__ import annotations

import pytest

from reasoner.verifiers import VERIFIERS, load

NEEDS_A_MODEL = {"judge", "reward-model"}


@pytest.mark.parametrize("name", sorted(set(VERIFIERS) - NEEDS_A_MODEL))
def test_loads_with_a_timeout_it_keeps(name: str) -> None:
    with load(name, timeout_s=5.0) as verifier:
        assert verifier.name == name
        assert verifier.timeout_s == 5.0


def test_only_the_judge_needs_a_generator() -> None:
    assert {name for name, cls in VERIFIERS.items() if cls.needs_generator} == {"judge"}


def test_the_code_runners_say_so() -> None:
    runners = {name for name, cls in VERIFIERS.items() if cls.runs_completion_as_code}
    assert runners == {"python-math", "unit-tests"}


def test_answer_readers_extract_without_a_reference() -> None:
    readers = {name for name, cls in VERIFIERS.items() if cls.can_extract_answers()}
    assert readers == {"math", "choice", "fol"}
    cases = {
        "math": ("So the total is 3 + 4 = 7.\nThe answer is 7.", "7"),
        "choice": ("Comparing the options, the answer is (C).", "C"),
        "fol": ("The premises do not settle it. Answer: Uncertain", "Uncertain"),
    }
    for name, (text, expected) in cases.items():
        with load(name, timeout_s=5.0) as verifier:
            assert verifier.extract_answer(text) == expected
            assert verifier.extract_answer("no idea") is None
    with load("unit-tests", timeout_s=5.0) as verifier:
        assert verifier.extract_answer("The answer is 7.") is None
