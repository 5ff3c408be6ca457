"""`reasoner verify`, the regression suites, and verifiers as TRL reward functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasoner.cli import main
from reasoner.verifiers import as_reward_fn, load
from reasoner.verifiers.selftest import load_cases, run_suite, suite_paths


def test_math_regression_suite_has_no_unexpected_verdicts() -> None:
    path = suite_paths()["math"]
    cases = load_cases(path)
    assert len(cases) >= 150
    assert {c["expected"] for c in cases} == {"correct", "incorrect", "error"}
    with load("math") as verifier:
        report = run_suite(verifier, path)
    assert report.failures == []
    assert report.passed + len(report.known_failures) == report.total
    assert all(case["reason"] for case in report.known_failures)


def test_selftest_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--selftest", "--verifier", "math"]) == 0
    assert "0 unexpected" in capsys.readouterr().out


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def test_verify_file_writes_verdicts_and_summary(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "cands.jsonl",
        [
            json.dumps({"uid": "a", "out": "so \\boxed{12}", "gold": "12"}),
            json.dumps({"uid": "b", "out": "the answer is 7", "gold": "8"}),
            json.dumps({"uid": "c", "out": "no idea", "gold": "8"}),
        ],
    )
    code = main(
        [
            "verify",
            str(source),
            "--completion-field",
            "out",
            "--answer-field",
            "gold",
            "--id-field",
            "uid",
            "--out",
            str(tmp_path / "v.jsonl"),
        ]
    )
    assert code == 0
    verdicts = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [(v["id"], v["status"]) for v in verdicts] == [
        ("a", "correct"),
        ("b", "incorrect"),
        ("c", "incorrect"),
    ]
    assert verdicts[2]["feedback"] == "no answer found"
    summary = json.loads((tmp_path / "v.summary.json").read_text())
    assert summary["correct"] == 1 and summary["candidates"] == 3


def test_verify_file_names_the_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write(
        tmp_path / "c.jsonl",
        [
            json.dumps({"completion": "1", "answer": "1"}),
            json.dumps({"completion": "1"}),
        ],
    )
    assert main(["verify", str(source)]) == 2
    assert "c.jsonl:2: missing field(s) ['answer']" in capsys.readouterr().err
    assert main(["verify", str(source), "--skip-bad"]) == 0
    assert '"bad_rows_skipped": 1' in capsys.readouterr().out


def test_reward_function_for_trl() -> None:
    with load("math") as verifier:
        reward = as_reward_fn(verifier)
        scores = reward(
            prompts=["q1", "q2", "q3"],
            completions=["\\boxed{4}", [{"role": "assistant", "content": "The answer is 5"}], "x"],
            answer=["4", "6", ""],
        )
        assert scores == [1.0, 0.0, None]  # the verifier error is None, not a zero
        assert reward.__name__ == "math_reward"
        with pytest.raises(KeyError, match="needs the dataset column 'answer'"):
            reward(prompts=["q"], completions=["1"], solution=["1"])


def test_verify_file_with_the_fol_verifier_and_an_option(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "fol.jsonl",
        [
            json.dumps({"id": "t", "completion": "The answer is True", "answer": "True"}),
            json.dumps({"id": "u", "completion": "B", "answer": "Uncertain"}),
        ],
    )
    out = tmp_path / "v.jsonl"
    assert (
        main(
            ["verify", str(source), "--verifier", "fol", "--option", "prover=z3", "--out", str(out)]
        )
        == 0
    )
    statuses = [json.loads(line)["status"] for line in out.read_text().splitlines()]
    assert statuses == ["correct", "incorrect"]


def test_unknown_verifier_option_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "c.jsonl", [json.dumps({"completion": "1", "answer": "1"})])
    assert main(["verify", str(source), "--option", "colour=red"]) == 2
    assert "verifier 'math'" in capsys.readouterr().err
