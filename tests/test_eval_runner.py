"""`run_eval` end to end on the real SmolLM2 through the transformers backend (fast tier)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reasoner.config import EvalConfig, build_config
from reasoner.runner.evaluate import run_eval
from reasoner.runner.run_folder import RunFolder

METRIC_KEYS = (
    "problems",
    "scored",
    "correct",
    "accuracy",
    "accuracy_ci95",
    "verifier_errors",
    "no_answer",
    "tokens",
    "pass@k",
    "maj@k",
    "engine_requests",
    "complete",
)


def _config(out: Path, data_dir: Path, *overrides: str) -> EvalConfig:
    return build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            "model.name=smollm2-135m-instruct",
            "model.backend=transformers",
            "limit=4",
            "sampling.max_tokens=48",
            f"out={out}",
            f"data_dir={data_dir}",
            "progress=false",
            *overrides,
        ],
    )


def _metrics(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in METRIC_KEYS if k in summary}


def test_greedy_run_writes_the_run_folder(
    tmp_path: Path, data_dir: Path, hf_generator: Any
) -> None:
    summary = run_eval(_config(tmp_path / "run", data_dir), generator=hf_generator)
    folder = RunFolder(tmp_path / "run")
    rows = folder.load_results()
    assert [r["problem"]["id"] for r in rows] == ["0", "1", "2", "3"]
    assert summary["problems"] == 4 and summary["complete"]
    assert summary["tokens"]["completion"] == sum(r["usage"]["completion_tokens"] for r in rows)
    step = rows[0]["steps"][0]
    assert step["request"]["messages"][-1]["content"].startswith("Janet")
    assert step["verdicts"][0]["status"] in ("correct", "incorrect")
    manifest = json.loads(folder.manifest_path.read_text())
    assert manifest["dataset"]["sha256"] == (
        "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    )
    assert manifest["prompts"][0]["sha256"] and manifest["seed"] == 0
    assert "torch" in manifest["packages"] and manifest["hardware"]["cpu_count"]
    assert json.loads(folder.summary_path.read_text())["accuracy"] == summary["accuracy"]


def test_resume_after_a_crash_loses_nothing(
    tmp_path: Path, data_dir: Path, hf_generator: Any
) -> None:
    full = run_eval(_config(tmp_path / "full", data_dir), generator=hf_generator)
    full_rows = RunFolder(tmp_path / "full").load_results()

    crashed = RunFolder(tmp_path / "crashed")
    crashed.path.mkdir()
    # a killed run leaves its config.yaml (a folder without one is not taken over)
    crashed.config_path.write_bytes((tmp_path / "full" / "config.yaml").read_bytes())
    lines = (tmp_path / "full" / "results.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "crashed" / "results.jsonl").write_text("".join(lines[:2]) + lines[2][:40])
    resumed = run_eval(_config(tmp_path / "crashed", data_dir), generator=hf_generator)
    rows = crashed.load_results()
    assert [r["problem"]["id"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[:2] == full_rows[:2]  # finished rows are kept as they were
    assert _metrics(resumed) == _metrics(full)


def test_self_consistency_reports_maj_and_pass_at_k(
    tmp_path: Path, data_dir: Path, hf_generator: Any
) -> None:
    summary = run_eval(
        _config(
            tmp_path / "sc", data_dir, "strategy.name=self-consistency", "strategy.n=4", "limit=3"
        ),
        generator=hf_generator,
    )
    assert summary["samples_per_problem"] == 4
    assert set(summary["pass@k"]) == {"1", "2", "3", "4"}
    assert set(summary["maj@k"]) == {"1", "2", "4"}
    rows = RunFolder(tmp_path / "sc").load_results()
    assert all(len(r["clusters"]) == 4 for r in rows)
    assert summary["pass@k"]["4"] >= summary["pass@k"]["1"]


def test_a_longer_limit_extends_a_finished_run(
    tmp_path: Path, data_dir: Path, hf_generator: Any
) -> None:
    run_eval(_config(tmp_path / "grow", data_dir, "limit=2"), generator=hf_generator)
    summary = run_eval(_config(tmp_path / "grow", data_dir, "limit=3"), generator=hf_generator)
    assert summary["problems"] == 3
    assert summary["timing"]["sessions"] == 2


def test_changed_settings_refuse_to_resume(
    tmp_path: Path, data_dir: Path, hf_generator: Any
) -> None:
    run_eval(_config(tmp_path / "run", data_dir, "limit=1"), generator=hf_generator)
    from reasoner.errors import ConfigError

    with pytest.raises(ConfigError, match="seed: 0 -> 1"):
        run_eval(_config(tmp_path / "run", data_dir, "limit=1", "seed=1"), generator=hf_generator)
