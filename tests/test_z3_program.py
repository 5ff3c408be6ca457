"""z3-program: model-written z3 programs run in the real bubblewrap sandbox; reading the chosen
option, the errors fed back for repair, and the loop on a real LogicalDeduction problem (the
model's replies scripted)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from _counting_generator import CountingGenerator
from _scripted_generator import ScriptedGenerator

from reasoner.errors import ConfigError
from reasoner.prompts import load_prompt
from reasoner.resources import asset_dir
from reasoner.runner.benchmarks import load_benchmark
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.strategies.base import StrategyConfig
from reasoner.strategies.z3_program import Options, Z3Program, extract_program, read_choice
from reasoner.types import GenerationRequest, Problem, SamplingParams
from reasoner.verifiers import sandbox
from reasoner.verifiers.choice import ChoiceVerifier

# The first LogicalDeduction dev problem (five books; gold D), stated to z3 by hand.
BOOKS = """```python
from z3 import *

green, blue, white, purple, yellow = Ints("green blue white purple yellow")
books = [green, blue, white, purple, yellow]
s = Solver()
s.add([And(1 <= b, b <= 5) for b in books])
s.add(Distinct(books))
s.add(blue > yellow, white < yellow, blue == 4, purple == 2)
options = {"A": green == 2, "B": blue == 2, "C": white == 2, "D": purple == 2, "E": yellow == 2}
for letter, claim in options.items():
    s.push()
    s.add(Not(claim))
    if s.check() == unsat:
        print(letter)
    s.pop()
```"""
CRASHING = "```python\nfrom z3 import *\ns = Solver()\ns.add(undefined_name > 1)\n```"


def logical_deduction(data_dir: Path) -> Problem:
    spec = load_benchmark("logical_deduction")
    return load_dataset(load_manifest(spec.dataset), spec.split, str(data_dir), False).problems[0]


def lettered(count: int) -> Problem:
    options = [f"{chr(65 + i)}) option {i}" for i in range(count)]
    return Problem("p", "q", "A", {"options": options})


def test_the_prompts_own_example_programs_run_in_the_sandbox() -> None:
    text = (asset_dir("prompts") / "z3_program" / "user.jinja").read_text()
    programs = re.findall(r"```python\n.*?```", text, re.S)
    assert len(programs) == 2
    # run as the programs of a prompt that has no examples of its own...
    own = Options(prompt="logic_mc")
    answers = [
        Z3Program().execute(lettered(n), p, own) for p, n in zip(programs, (3, 4), strict=True)
    ]
    assert [(a.answer, a.error) for a in answers] == [("B", None), ("C", None)]
    # ...and rejected as copies where they are the prompt's examples
    copied = Z3Program().execute(lettered(3), programs[0], Options())
    assert copied.error == "copied_example" and copied.answer is None


def test_a_hand_written_program_solves_a_real_problem(data_dir: Path) -> None:
    problem = logical_deduction(data_dir)
    assert problem.answer == "D"
    assert Z3Program().execute(problem, BOOKS, Options()).answer == "D"


def test_failures_are_reported_with_what_the_model_needs_to_fix_them() -> None:
    run = Z3Program().execute
    crashed = run(lettered(3), CRASHING, Options())
    assert crashed.error == "runtime_error"
    assert "NameError: name 'undefined_name' is not defined" in crashed.message
    assert run(lettered(3), "I would pick B.", Options()).error == "no_program"
    silent = run(lettered(3), "```python\nprint('maybe F')\n```", Options())
    assert silent.error == "no_answer" and "(A, B, C)" in silent.message
    slow = run(lettered(3), "```python\nwhile True:\n    pass\n```", Options(wall_seconds=1))
    assert slow.error == "timeout"
    assert not any(o.infrastructure for o in (crashed, silent, slow))


def test_programs_and_choices_are_read_leniently() -> None:
    assert extract_program("text\n```python\nprint(1)\n```\nmore ```py\nprint(2)\n```") == (
        "print(2)\n"
    )
    assert extract_program("from z3 import *\nprint('A')") is not None
    assert read_choice("checking\nB\n", {"A", "B"}) == "B"
    assert read_choice("Answer: (C)\ndone", {"A", "B", "C"}) == "C"
    assert read_choice("Z\n", {"A", "B"}) is None


def test_a_crashing_program_is_repaired_and_the_majority_is_scored(data_dir: Path) -> None:
    problem = logical_deduction(data_dir)

    def script(request: GenerationRequest, call: int) -> list[str]:
        if call == 0:
            return [CRASHING, BOOKS, CRASHING]
        assert "NameError" in (request.messages or ())[-1].content
        return [BOOKS] if call == 1 else []

    generator = ScriptedGenerator(script)
    (trace,) = Z3Program().run(
        [problem],
        generator,
        ChoiceVerifier(),
        StrategyConfig(load_prompt("logic_mc"), SamplingParams(temperature=0.7), n=3),
    )
    assert generator.calls == [1, 2]
    assert trace.prediction == "D" and trace.verdict.status == "correct"
    assert trace.verdict.details["votes"] == {"D": 3}
    assert trace.verdict.details["attempt_errors"] == {"runtime_error": 2}


def test_without_the_sandbox_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", "no-such-bwrap")
    config = StrategyConfig(load_prompt("logic_mc"), SamplingParams())
    with pytest.raises(ConfigError, match="bubblewrap"):
        Z3Program().validate(config)
    outcome = Z3Program().execute(lettered(2), BOOKS, Options())
    assert outcome.infrastructure and outcome.error == "sandbox_error"


@pytest.mark.slow
def test_z3_program_runs_end_to_end_through_run_eval(
    tmp_path: Path, data_dir: Path, vllm_generator: Any
) -> None:
    from reasoner.config import EvalConfig, build_config
    from reasoner.runner.evaluate import run_eval
    from reasoner.runner.run_folder import RunFolder

    counting = CountingGenerator(vllm_generator)
    config = build_config(
        EvalConfig,
        {},
        [
            "benchmark=logical_deduction",
            "model.name=smollm2-135m-instruct",
            "strategy.name=z3-program",
            "strategy.n=2",
            "strategy.options.max_refine_rounds=1",
            "limit=2",
            "sampling.max_tokens=128",
            f"data_dir={data_dir}",
            f"out={tmp_path / 'run'}",
            "progress=false",
        ],
    )
    summary = run_eval(config, generator=counting)
    rows = RunFolder(tmp_path / "run").load_results()
    assert summary["problems"] == 2 and counting.calls[0] == 2
    failed_first = sum(1 for row in rows for n in row["tree"] if n["round"] == 0 and n["error"])
    # then one call for every problem no program decided (the chain-of-thought fallback)
    fell_back = sum(1 for row in rows if row["verdict"]["details"].get("fallback") == "cot")
    assert counting.calls[1:] == [c for c in (failed_first, fell_back) if c]
    for row in rows:
        for node in row["tree"]:
            # every program ran in the sandbox or was turned away with a reason
            assert (node["answer"] is None) == bool(node["error"])
            assert node["error"] != "sandbox_error"
