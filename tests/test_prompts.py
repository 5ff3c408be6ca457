"""Prompt files: worked examples render as earlier chat turns, and the shipped few-shot PAL
examples are programs that run in the sandbox and print their question's answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasoner.errors import ConfigError
from reasoner.prompts import load_prompt
from reasoner.strategies.program_aided import run_program
from reasoner.types import Problem
from reasoner.verifiers.sandbox import default_limits

# The answers of Wei et al. 2022's chain-of-thought exemplars, in the order of shots.yaml.
PAL_SHOT_ANSWERS = ["8", "33", "29", "9", "8", "39", "5", "6"]


def test_shots_render_as_user_and_assistant_turns_before_the_question() -> None:
    prompt = load_prompt("math_program_fewshot")
    messages = prompt.render(Problem("p", "How many legs do 3 cats have?", "12"))
    roles = [m.role for m in messages]
    assert roles == ["system"] + ["user", "assistant"] * len(PAL_SHOT_ANSWERS) + ["user"]
    assert messages[1].content.startswith("Olivia has $23.")
    assert messages[-1].content == "How many legs do 3 cats have?"
    assert prompt.sha256 != load_prompt("math_program").sha256


def test_the_shipped_pal_examples_run_and_print_their_answers() -> None:
    prompt = load_prompt("math_program_fewshot")
    printed = [run_program(answer, default_limits()).printed for _, answer in prompt.shots]
    assert printed == PAL_SHOT_ANSWERS


def test_a_malformed_shots_file_is_an_error_naming_the_file_and_entry(tmp_path: Path) -> None:
    (tmp_path / "user.jinja").write_text("{{ question }}")
    (tmp_path / "shots.yaml").write_text("- question: q\n  answer: a\n- question: only\n")
    with pytest.raises(ConfigError, match=r"shots\.yaml: entry 2"):
        load_prompt(str(tmp_path))
