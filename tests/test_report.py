from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from reasoner.runner.metrics import summarize
from reasoner.runner.report import ReportError, pareto_front, run_labels, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(out: str, strategy: str = "greedy", n: int = 1, temperature: float = 0.0) -> dict:
    return {
        "benchmark": "math500",
        "model": {"name": "tiny", "dtype": "bfloat16"},
        "strategy": {"name": strategy, "n": n},
        "sampling": {"temperature": temperature, "max_tokens": 512, "stop": []},
        "limit": 4,
        "seed": 0,
        "out": out,
        "progress": False,
    }


def _row(pid: str, level: int, samples: list[str], prompt: int, cached: int, gen: int) -> dict:
    """A results row whose final verdict is the first sample's and whose samples all give
    distinct answers (so maj@k follows the first sample)."""
    return {
        "problem": {"id": pid, "question": "q", "answer": "1", "metadata": {"level": level}},
        "prediction": "1",
        "verdict": {"status": samples[0]},
        "clusters": list(range(len(samples))),
        "usage": {
            "prompt_tokens": prompt,
            "cached_prompt_tokens": cached,
            "completion_tokens": gen,
            "engine_calls": 1,
            "verifier_calls": len(samples),
            "wall_time_s": 1.0,
        },
        "steps": [{"request": {}, "completions": [], "verdicts": [{"status": s} for s in samples]}],
    }


def _write_run(folder: Path, config: dict, rows: list[dict], tokens_per_s: float = 100.0) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary: dict[str, Any] = {
        "benchmark": config["benchmark"],
        "model": config["model"]["name"],
        "strategy": config["strategy"]["name"],
        "n": config["strategy"]["n"],
        **summarize(rows),
        "timing": {"completion_tokens_per_s": tokens_per_s},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    greedy_rows = [
        _row("a", 1, ["correct"], 100, 0, 50),
        _row("b", 1, ["correct"], 100, 0, 50),
        _row("c", 2, ["incorrect"], 100, 0, 50),
        _row("d", 2, ["error"], 100, 0, 50),
    ]
    sc_rows = [
        _row("a", 1, ["correct", "incorrect", "correct", "correct"], 400, 300, 200),
        _row("b", 1, ["correct", "correct", "correct", "correct"], 400, 300, 200),
        _row("c", 2, ["incorrect", "incorrect", "correct", "incorrect"], 400, 300, 200),
        _row("d", 2, ["incorrect", "incorrect", "incorrect", "incorrect"], 400, 300, 200),
    ]
    return [
        _write_run(tmp_path / "greedy", _config("runs/g"), greedy_rows),
        _write_run(tmp_path / "sc", _config("runs/s", "self_consistency", 4, 0.7), sc_rows),
        _write_run(tmp_path / "greedy-again", _config("runs/g2"), greedy_rows, 200.0),
    ]


def _markdown_rows(text: str) -> dict[str, list[str]]:
    """The main table's data rows, keyed by run label."""
    table = text.split("\n\n")[1].splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in table]
    return {row[0]: row for row in cells}


def test_report_table_labels_runs_by_what_differs(runs: list[Path], tmp_path: Path) -> None:
    files = write_report(runs, tmp_path / "report")
    rows = _markdown_rows(files.markdown.read_text())
    greedy = "strategy.name=greedy, strategy.n=1, sampling.temperature=0.0"
    sc = "strategy.name=self_consistency, strategy.n=4, sampling.temperature=0.7"
    # identical configs (out differs only) keep the same label, told apart by folder name
    assert list(rows) == [f"{greedy} (greedy)", sc, f"{greedy} (greedy-again)"]

    g = rows[f"{greedy} (greedy)"]
    # 2 correct of 3 scored (1 verifier error): Wilson(2, 3) = [20.8%, 93.9%]
    assert g[1:6] == ["math500", "tiny", "greedy", "4", "66.7% [20.8, 93.9]"]
    assert g[6:8] == ["–", "–"]  # no maj@k / pass@k for one sample
    assert g[8] == "1 (25.0%)"
    # 50 generated + 100 prefilled per problem; 4 problems
    assert g[9:] == ["50", "150", "600", "100"]

    s = rows[sc]
    assert s[3] == "self_consistency (n=4)"
    # 2 of 4: Wilson centre 0.5, half-width z·sqrt(1/16 + z²/64) / (1 + z²/4) = 0.350
    assert s[5] == "50.0% [15.0, 85.0]"
    # maj@4 (first sample wins the tie): a, b -> 2/4; pass@4: a, b, c -> 3/4
    assert s[6:8] == ["50.0% (k=4)", "75.0% (k=4)"]
    # 200 generated + (400 - 300) prefilled per problem
    assert s[9:12] == ["200", "300", "1200"]


def test_report_csv_keeps_numbers(runs: list[Path], tmp_path: Path) -> None:
    files = write_report(runs, tmp_path / "report")
    with open(files.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    g, s = rows[0], rows[1]
    assert float(g["accuracy"]) == pytest.approx(2 / 3)
    assert float(g["accuracy_ci95_low"]) == pytest.approx(0.2077, abs=1e-4)
    assert float(g["accuracy_ci95_high"]) == pytest.approx(0.9385, abs=1e-4)
    assert g["maj@k"] == "" and g["pass_k"] == ""
    assert (int(s["maj_k"]), float(s["maj@k"]), float(s["pass@k"])) == (4, 0.5, 0.75)
    assert float(s["compute"]) == 1200 and float(s["compute_per_problem"]) == 300
    assert float(g["verifier_error_rate"]) == 0.25
    assert float(rows[2]["tokens_per_s"]) == 200.0


def test_report_breaks_down_by_metadata_and_draws_pngs(runs: list[Path], tmp_path: Path) -> None:
    files = write_report(runs, tmp_path / "report")
    text = files.markdown.read_text()
    assert "## Accuracy by level" in text
    level_table = text.split("## Accuracy by level")[1]
    # greedy, level 2: one incorrect, one verifier error -> 0/1 scored
    assert "| 1 | 100.0% [34.2, 100.0] (2/2) |" in level_table
    assert "| 2 | 0.0% [0.0, 79.3] (0/1) |" in level_table
    names = [p.name for p in files.plots]
    assert names == ["accuracy.png", "accuracy_vs_compute.png", "accuracy_by_level.png"]
    for plot in files.plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
        assert f"]({plot.name})" in text


def test_breakdown_keys_can_be_chosen(runs: list[Path], tmp_path: Path) -> None:
    files = write_report(runs[:1], tmp_path / "report", breakdown_keys=[])
    assert "Accuracy by" not in files.markdown.read_text()
    assert len(files.plots) == 2
    # a lone run is named by its folder
    assert "| greedy | math500 |" in files.markdown.read_text()


def test_labels_fall_back_to_limit_then_folder_name() -> None:
    a, b = _config("x"), _config("y")
    assert run_labels([a, b], ["x", "y"]) == ["x", "y"]
    b["limit"] = 100
    assert run_labels([a, b], ["x", "y"]) == ["limit=4", "limit=100"]
    b["model"] = {"name": "other", "dtype": "bfloat16"}
    assert run_labels([a, b], ["x", "y"]) == ["model.name=tiny", "model.name=other"]


def test_missing_summary_names_folder_and_file(runs: list[Path], tmp_path: Path) -> None:
    (runs[1] / "summary.json").unlink()
    with pytest.raises(ReportError, match=r"sc.*summary\.json is missing"):
        write_report(runs, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_corrupt_files_are_named(runs: list[Path], tmp_path: Path) -> None:
    (runs[0] / "config.yaml").write_text("- a list\n")
    with pytest.raises(ReportError, match=r"greedy/config\.yaml: expected a mapping"):
        write_report(runs[:1], tmp_path / "report")
    results = runs[1] / "results.jsonl"
    results.write_text('{"torn\n' + results.read_text())
    with pytest.raises(ReportError, match=r"sc/results\.jsonl:1: unreadable result line"):
        write_report(runs[1:], tmp_path / "report")
    with pytest.raises(ReportError, match="no such directory"):
        write_report([tmp_path / "nowhere"], tmp_path / "report")


def test_torn_last_line_is_skipped_and_left_in_place(runs: list[Path], tmp_path: Path) -> None:
    results = runs[0] / "results.jsonl"
    results.write_text(results.read_text() + '{"problem": ')
    before = results.read_bytes()
    write_report(runs[:1], tmp_path / "report")
    assert results.read_bytes() == before


def test_labels_use_folder_names_when_many_keys_differ() -> None:
    a, b = _config("x"), _config("y")
    b["strategy"] = {"name": "mcts", "n": 8, "options": {"simulations": 16, "c_puct": 1.0}}
    assert run_labels([a, b], ["greedy", "mcts"]) == ["greedy", "mcts"]


def test_top_k_is_the_largest_k_every_problem_reaches(tmp_path: Path) -> None:
    from reasoner.runner.report import Run, top_k

    # a tree search: 3 problems with 2, 3 and 4 candidates; pass@4 covers only one of them
    summary = {
        "pass@k": {"1": 0.2, "2": 0.4, "3": 0.5, "4": 1.0},
        "at_k_problems": {"1": 3, "2": 3, "3": 2, "4": 1},
    }
    assert top_k(Run(tmp_path, {}, summary, []), "pass@k") == (2, 0.4)
    # summaries written before at_k_problems existed keep the largest k
    legacy = {"pass@k": {"1": 0.2, "2": 0.4}}
    assert top_k(Run(tmp_path, {}, legacy, []), "pass@k") == (2, 0.4)


def test_pareto_front_keeps_the_runs_nothing_beats() -> None:
    # (compute, accuracy): c is beaten by a (cheaper, more accurate); d ties a on accuracy at
    # more compute; e buys accuracy with compute; b is the cheapest
    points = [(100.0, 0.5), (50.0, 0.2), (200.0, 0.4), (300.0, 0.5), (1000.0, 0.7)]
    assert pareto_front(points) == [1, 0, 4]
    assert pareto_front([(10.0, 0.3), (10.0, 0.3)]) == [0, 1]  # equal points both stay
    assert pareto_front([]) == []


def test_report_names_its_pareto_front(runs: list[Path], tmp_path: Path) -> None:
    text = write_report(runs, tmp_path / "report").markdown.read_text()
    line = next(x for x in text.splitlines() if x.startswith("Pareto front"))
    # greedy: 66.7% at 150 tokens/problem; self-consistency: 50% at 300 is beaten by it
    assert "(greedy)" in line
    assert "self_consistency" not in line


def test_an_interval_a_rounding_error_past_its_point_still_plots(
    runs: list[Path], tmp_path: Path
) -> None:
    """0 of 12 correct: the Wilson lower bound came out a hair above 0.0 in a real run, and
    matplotlib refused the negative error bar, so `reasoner compare` crashed after its runs."""
    summary_path = runs[0] / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(accuracy=0.0, accuracy_ci95=[1e-17, 0.24])
    summary_path.write_text(json.dumps(summary))
    files = write_report(runs, tmp_path / "report")
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in files.plots)
