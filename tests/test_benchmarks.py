"""Every benchmark definition loads its real data, and its verifier can score its own gold.

The round trip (a completion that states the gold the way the prompt asks is correct, a wrong
one is not) catches a gold format the verifier cannot read, which would silently score zero.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from reasoner.errors import DatasetError
from reasoner.prompts import load_prompt
from reasoner.runner.benchmarks import available_benchmarks, load_benchmark
from reasoner.runner.catalog import catalog_rows, format_catalog
from reasoner.runner.datasets import (
    FieldMap,
    LoadedDataset,
    load_dataset,
    load_manifest,
    read_jsonl,
)
from reasoner.types import Completion, Problem
from reasoner.verifiers import load

BENCHMARKS = available_benchmarks()
LEAN = {"minif2f", "proofnet"}
EXPECTED = {"aime24", "amc23", "ar_lsat", "asdiv", "folio", "gsm8k", "logical_deduction", "math"}
EXPECTED |= {"math500", "prontoqa", "proofwriter", "svamp"} | LEAN


@cache
def _loaded(name: str, data_dir: str) -> LoadedDataset:
    spec = load_benchmark(name)
    return load_dataset(load_manifest(spec.dataset), spec.split, data_dir=data_dir)


def test_every_issue_benchmark_is_defined() -> None:
    assert set(BENCHMARKS) >= EXPECTED


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_loads_checked_and_complete(name: str, data_dir: Path) -> None:
    spec = load_benchmark(name)
    manifest = load_manifest(spec.dataset)
    split = manifest.splits[spec.split]
    loaded = _loaded(name, str(data_dir))
    assert split.sha256 is not None and loaded.sha256 == split.sha256
    assert len(loaded.problems) == split.count
    assert len({p.id for p in loaded.problems}) == len(loaded.problems)
    assert not loaded.bad_rows
    prompt = load_prompt(spec.prompt)
    assert prompt.render(loaded.problems[0])[-1].content.strip()
    if spec.verifier == "lean":
        assert all(p.metadata["formal_statement"].strip() for p in loaded.problems)
        assert all(p.metadata["header"].strip() for p in loaded.problems)
    else:
        assert all(p.answer and p.answer.strip() for p in loaded.problems)


def _stated(verifier: str, answer: str) -> str:
    """The final line each prompt asks for."""
    if verifier == "math":
        return f"Some working.\nThe answer is \\boxed{{{answer}}}."
    if verifier == "choice":
        return f"Some working.\nThe answer is ({answer})."
    return f"Some working.\nThe answer is {answer}."


def _wrong(verifier: str, problem: Problem) -> str:
    gold = problem.answer or ""
    if verifier == "choice":
        return "B" if gold != "B" else "A"
    if verifier == "fol":
        return "False" if gold != "False" else "True"
    return "-123456789" if gold != "-123456789" else "1"


@pytest.mark.parametrize("name", sorted(set(BENCHMARKS) - LEAN))
def test_gold_answer_round_trips_through_the_verifier(name: str, data_dir: Path) -> None:
    spec = load_benchmark(name)
    problems = _loaded(name, str(data_dir)).problems[:3]
    with load(spec.verifier) as verifier:
        for problem in problems:
            assert problem.answer is not None
            right = Completion(_stated(spec.verifier, problem.answer), "stop", 0, 0)
            wrong = Completion(_stated(spec.verifier, _wrong(spec.verifier, problem)), "stop", 0, 0)
            assert verifier.verify(problem, right).status == "correct", problem
            assert verifier.verify(problem, wrong).status == "incorrect", problem


@pytest.mark.parametrize("name", sorted(LEAN))
def test_lean_benchmark_without_lean_is_an_error_not_a_score(name: str, data_dir: Path) -> None:
    problem = _loaded(name, str(data_dir)).problems[0]
    with load("lean", project_dir="/nonexistent-lean-project") as verifier:
        proof = Completion(
            f"```lean\n{problem.metadata['formal_statement']} sorry\n```", "stop", 0, 0
        )
        assert verifier.verify(problem, proof).status == "error"


@pytest.mark.parametrize(
    ("name", "gold"),
    [("amc23", "27"), ("svamp", "145"), ("asdiv", "9"), ("aime24", "204"), ("folio", "Uncertain")],
)
def test_gold_formats_are_reduced(name: str, gold: str, data_dir: Path) -> None:
    assert _loaded(name, str(data_dir)).problems[0].answer == gold


def test_composed_questions_and_renamed_metadata(data_dir: Path) -> None:
    svamp = _loaded("svamp", str(data_dir)).problems[0]
    assert svamp.question.startswith("There are 87 oranges")
    assert svamp.question.endswith("organized into 93 groups How big is each group of bananas?")
    folio = _loaded("folio", str(data_dir)).problems[0]
    assert folio.question.startswith("Premises:\n- If people perform")
    assert folio.metadata["premises_fol"] and folio.metadata["conclusion_fol"]
    lsat = _loaded("ar_lsat", str(data_dir)).problems[0]
    assert (
        "\nOptions:\nA) " in lsat.question and lsat.question.rstrip().splitlines()[-1][:2] == "E)"
    )
    level = _loaded("math", str(data_dir)).problems[0].metadata["level"]
    assert isinstance(level, str) and level.startswith("Level ")


def test_asdiv_is_flagged_non_commercial_in_the_catalog() -> None:
    rows = {row["name"]: row for row in catalog_rows()}
    assert rows["asdiv"]["non_commercial"] is True
    assert "NC" in rows["asdiv"]["licence"]
    assert not rows["gsm8k"]["non_commercial"]
    assert rows["math"]["count"] == 5000 and rows["minif2f"]["verifier"] == "lean"
    table = format_catalog(list(rows.values()))
    asdiv_line = next(line for line in table.splitlines() if line.startswith("asdiv "))
    assert "NON-COMMERCIAL" in asdiv_line


def test_malformed_json_array_element_names_file_and_index(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    rows = [{"id": "a", "question": "q", "answer": "A"}, ["not", "an", "object"]]
    path.write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match=r"dev\.json\[element 1\]"):
        read_jsonl(path, FieldMap(id="id"), file_format="json")
    loaded = read_jsonl(path, FieldMap(id="id"), skip_bad=True, file_format="json")
    assert [p.id for p in loaded.problems] == ["a"] and len(loaded.bad_rows) == 1


def test_a_json_file_that_is_not_an_array_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"id": "a"}))
    with pytest.raises(DatasetError, match="expected a JSON array"):
        read_jsonl(path, FieldMap(), file_format="json")
