"""`reasoner iterate` without a model: config checks, difficulty-aware selection, reports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reasoner.config import build_config
from reasoner.errors import ConfigError, DatasetError
from reasoner.loops.config import IterateConfig
from reasoner.loops.iterate import _hard_ids, run_iterate, stage_config
from reasoner.loops.report import is_iterate_folder, plot_rounds, rounds_table
from reasoner.loops.train_child import memory_report, train_in_child
from reasoner.runner.run_folder import RunFolder
from reasoner.training.config import DPOConfig, SFTConfig


def test_stage_config_takes_the_train_section_and_sets_what_each_round_decides(
    tmp_path: Path,
) -> None:
    config = build_config(
        IterateConfig,
        {"stage": "sft", "train": {"train": {"max_steps": 3}, "lora": {"r": 4}}},
        ["init=last"],
    )
    staged = stage_config(config, tmp_path / "data.jsonl", "/adapters/r1", tmp_path / "train")
    assert isinstance(staged, SFTConfig)
    assert staged.train.max_steps == 3 and staged.lora.r == 4
    assert staged.data.file == str(tmp_path / "data.jsonl")
    assert staged.model.adapter == "/adapters/r1"
    assert staged.model.name == config.model.name
    from_base = stage_config(
        config.model_copy(update={"init": "base"}), tmp_path / "d.jsonl", "/a", tmp_path / "t"
    )
    assert from_base.model.adapter is None


def test_dpo_loop_gets_the_dpo_stage() -> None:
    config = build_config(IterateConfig, {"stage": "dpo", "train": {"nll_alpha": 1.0}})
    staged = stage_config(config, Path("d.jsonl"), None, Path("t"))
    assert isinstance(staged, DPOConfig) and staged.nll_alpha == 1.0


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"trian": {"max_steps": 3}}, "trian"),
        ({"data": {"file": "x.jsonl"}}, "train.data"),
        ({"train": {"max_steps": 0}}, "max_steps"),
    ],
)
def test_bad_train_section_names_the_key(train: dict[str, Any], message: str) -> None:
    config = build_config(IterateConfig, {"train": train})
    with pytest.raises(ConfigError, match=message):
        stage_config(config, Path("d.jsonl"), None, Path("t"))


def test_unknown_loop_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="roundz"):
        build_config(IterateConfig, {}, ["roundz=3"])


def test_dpo_without_pairs_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    config = build_config(
        IterateConfig, {"stage": "dpo", "sample": {"strategy": {"n": 1}}, "out": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match="pairs"):
        run_iterate(config)


def _row(problem_id: str, statuses: list[str]) -> dict[str, Any]:
    return {
        "problem": {"id": problem_id},
        "steps": [{"verdicts": [{"status": s} for s in statuses]}],
    }


def test_hard_problems_are_those_at_or_below_the_pass_rate_threshold(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    folder.append_result(_row("easy", ["correct", "correct"]))
    folder.append_result(_row("half", ["correct", "incorrect"]))
    folder.append_result(_row("none", ["incorrect", "error"]))
    assert _hard_ids(tmp_path, 0.0) == ["none"]
    assert _hard_ids(tmp_path, 0.5) == ["half", "none"]


def _round(index: int, accuracy: float, records: int) -> dict[str, Any]:
    return {
        "round": index,
        "adapter": None if index == 0 else f"/a/{index}",
        "heldout": {
            "accuracy": accuracy,
            "accuracy_ci95": [accuracy - 0.1, accuracy + 0.1],
            "correct": int(accuracy * 10),
            "scored": 10,
            "compute_tokens": 1000 + index,
        },
        "train_samples": {"problems": 8, "samples": 32, "pass_rate": 0.25, "compute_tokens": 5000},
        "dataset_records": records,
    }


def test_rounds_table_and_plot(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    (loop / "rounds").mkdir(parents=True)
    (loop / "config.yaml").write_text(yaml.safe_dump({"stage": "sft"}))
    for index, (accuracy, records) in enumerate([(0.2, 0), (0.3, 12), (0.4, 20)]):
        (loop / "rounds" / str(index)).mkdir()
        (loop / "rounds" / str(index) / "round.json").write_text(
            json.dumps(_round(index, accuracy, records))
        )
    assert is_iterate_folder(loop)
    table = rounds_table(loop)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 4  # header and rounds 0, 1, 2
    assert "expert iteration" in table
    assert "| 2 | 40.0% (30.0%-50.0%) | 4/10 | 25.0% | 20 | 5000 | 1002 |" in table
    png = plot_rounds([loop], tmp_path / "rounds.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sft_stage(model: str, data: Path, out: Path) -> dict[str, Any]:
    return SFTConfig.model_validate(
        {
            "model": {"name": model},
            "data": {"file": str(data)},
            "train": {"max_steps": 2, "batch_size": 2, "save_steps": 1},
            "out": str(out),
            "progress": False,
        }
    ).model_dump(mode="json")


def test_training_runs_in_a_child_process_and_reports_its_peak_rss(
    tiny_model: str, tmp_path: Path
) -> None:
    data = tmp_path / "data.jsonl"
    records = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "completion": [{"role": "assistant", "content": f"{2 * i}."}],
        }
        for i in range(4)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    adapter, peak = train_in_child("sft", _sft_stage(tiny_model, data, tmp_path / "t"), tmp_path)
    assert (Path(adapter) / "adapter_model.safetensors").is_file()
    assert peak > 50  # MiB: a Python process with torch loaded, measured in the child
    assert json.loads((tmp_path / "train-result.json").read_text())["adapter"] == adapter
    # a finished run folder is returned again without training (the loop's resume)
    again, _ = train_in_child("sft", _sft_stage(tiny_model, data, tmp_path / "t"), tmp_path)
    assert again == adapter


def test_an_error_in_the_training_child_reaches_the_loop_by_class_and_message(
    tiny_model: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-data.jsonl"
    with pytest.raises(DatasetError, match=r"records file .*no-such-data\.jsonl does not exist"):
        train_in_child("sft", _sft_stage(tiny_model, missing, tmp_path / "t"), tmp_path)


def test_a_training_child_whose_loop_is_gone_dies_before_training(tmp_path: Path) -> None:
    """The loop's pid is passed on the command line: a child that starts after the loop died
    (re-parented) kills itself at once instead of training for nobody."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    spec, result = tmp_path / "spec.json", tmp_path / "result.json"
    spec.write_text(json.dumps({"stage": "sft", "config": {}}))
    child = subprocess.run(
        [sys.executable, "-m", "reasoner.loops.train_child", str(spec), str(result), str(gone.pid)],
        check=False,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL
    assert not result.exists()


def test_memory_report_has_the_loop_and_training_peaks() -> None:
    report = memory_report(1234.5)
    assert report["train_child_peak_rss_mib"] == 1234.5
    assert (report["loop_peak_rss_mib"] or 0) > 10
