"""The name -> class registry: lookups, and errors that list the valid names."""

from __future__ import annotations

import pytest

from reasoner.errors import ConfigError
from reasoner.registry import Registry
from reasoner.strategies import STRATEGIES, load_strategy
from reasoner.verifiers import VERIFIERS, load


def test_lookup_membership_and_names() -> None:
    colours = Registry("colour", {"red": 1, "blue": 2})
    assert colours["red"] == 1
    assert "blue" in colours and "green" not in colours
    assert colours.get("green") is None and colours.get("green", 3) == 3
    assert colours.names() == ["blue", "red"] and list(colours) == ["red", "blue"]
    assert len(colours) == 2 and dict(colours) == {"red": 1, "blue": 2}


def test_an_unknown_name_is_a_config_error_listing_the_choices() -> None:
    colours = Registry("colour", {"red": 1, "blue": 2})
    with pytest.raises(ConfigError, match=r"unknown colour 'green'; choose one of: blue, red"):
        colours["green"]


def test_entries_are_read_only() -> None:
    entries = {"red": 1}
    colours = Registry("colour", entries)
    entries["blue"] = 2  # the registry keeps its own copy
    assert "blue" not in colours
    with pytest.raises(TypeError):
        colours["blue"] = 2  # type: ignore[index]


def test_a_registry_by_name_refuses_two_classes_with_one_name() -> None:
    class A:
        name = "same"

    class B:
        name = "same"

    with pytest.raises(ValueError, match="two strategy classes are named 'same'"):
        Registry.by_name("strategy", [A, B])
    assert Registry.by_name("strategy", [A])["same"] is A


def test_the_shipped_registries_hold_every_shipped_part() -> None:
    assert VERIFIERS.names() == [
        "choice", "fol", "judge", "lean", "math", "python-math", "reward-model", "unit-tests"
    ]  # fmt: skip
    assert STRATEGIES.names() == [
        "beam-search", "best-of-n", "dvts", "fol-prover", "greedy", "lean-best-first",
        "lean-whole-proof", "mcts", "program-aided", "self-consistency", "self-refine",
        "tree-of-thought", "z3-program",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="unknown strategy 'beam'; choose one of: beam-search"):
        load_strategy("beam")
    with pytest.raises(ConfigError, match="unknown verifier 'maths'; choose one of: choice"):
        load("maths")
