"""The training run folder's records: metrics.jsonl on resume, checkpoints, configs, the CLI,
and the training plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from reasoner.config import config_file
from reasoner.errors import ConfigError
from reasoner.resources import asset_dir
from reasoner.training.cli import add_parser, overrides
from reasoner.training.config import MEZO_DEFAULTS, load_stage_config
from reasoner.training.plots import is_training_run, plot_training
from reasoner.training.run_folder import (
    MetricsLog,
    complete_checkpoints,
    prune,
    read_metrics,
    remove_incomplete,
)


def test_resume_cuts_later_steps_and_a_torn_line(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        assert log.append({"step": step, "kind": "train", "loss": 1.0 / step})
    log.append({"step": 2, "kind": "eval", "eval_loss": 0.7})
    with open(log.path, "a") as f:
        f.write('{"step": 4, "kind": "tra')  # killed mid-write
    resumed = MetricsLog(log.path)
    resumed.resume_at(2)
    assert [(r["kind"], r["step"]) for r in read_metrics(log.path)] == [
        ("train", 1),
        ("train", 2),
        ("eval", 2),
    ]
    assert not resumed.append({"step": 2, "kind": "eval", "eval_loss": 0.7})  # already there
    assert resumed.append({"step": 3, "kind": "train", "loss": 0.3})
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 2, 3]


def test_only_complete_checkpoints_count(tmp_path: Path) -> None:
    for step, done in ((2, True), (4, True), (6, False), (8, True)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if done:
            (folder / "trainer_state.json").write_text("{}")
    remove_incomplete(tmp_path, "trainer_state.json", "checkpoint-")
    assert not (tmp_path / "checkpoint-6").exists()
    found = complete_checkpoints(tmp_path, "trainer_state.json", "checkpoint-")
    assert [step for step, _ in found] == [2, 4, 8]
    prune(found, keep=2)
    assert [s for s, _ in complete_checkpoints(tmp_path, "trainer_state.json", "checkpoint-")] == [
        4,
        8,
    ]


@pytest.mark.parametrize(
    ("stage", "name"),
    [
        ("sft", "sft-smollm2-gsm8k"),
        ("dpo", "dpo-smollm2-gsm8k"),
        ("zo", "zo-smollm2-gsm8k"),
        ("zo", "zo-reward-smollm2-gsm8k"),
    ],
)
def test_shipped_configs_load(stage: str, name: str) -> None:
    config = load_stage_config(stage, str(config_file(name)), ["train.max_steps=3"])
    assert config.stage == stage and config.train.max_steps == 3


def test_config_errors_name_the_key_and_the_stage(tmp_path: Path) -> None:
    sft = str(asset_dir("configs") / "sft-smollm2-gsm8k.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'train\.lr'.*learning_rate"):
        load_stage_config("sft", sft, ["train.lr=1"])
    with pytest.raises(ConfigError, match="a config for stage 'sft', not 'dpo'"):
        load_stage_config("dpo", sft)
    with pytest.raises(ConfigError, match="exactly one source of records"):
        load_stage_config("sft", sft, ["data.runs=[runs/a]"])
    with pytest.raises(ConfigError, match="unknown training stage 'ppo'"):
        load_stage_config("ppo")
    zo = load_stage_config("zo", None, ["data.dataset=gsm8k", "zo.params=all"])
    assert zo.learning_rate == MEZO_DEFAULTS["all"]["learning_rate"]


def test_cli_flags_become_overrides() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["train", "zo", "--config", "zo-smollm2-gsm8k", "--out", "runs/x", "--set", "zo.n_spsa=2"]
    )
    assert args.stage == "zo" and str(config_file(args.config)).endswith("zo-smollm2-gsm8k.yaml")
    assert overrides(args) == ['out="runs/x"', "zo.n_spsa=2"]
    config = load_stage_config("zo", str(config_file(args.config)), overrides(args))
    assert config.out == "runs/x" and config.zo.n_spsa == 2


def test_plot_training_draws_loss_and_margin(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"stage": "dpo", "model": {"name": "m"}}))
    rows = [{"step": 0, "kind": "eval", "eval_loss": 1.0, "eval_rewards/margins": 0.0}]
    rows += [
        {"step": s, "kind": "train", "loss": 1.0 / s, "rewards/margins": 0.1 * s}
        for s in range(1, 8)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert is_training_run(run) and not is_training_run(tmp_path)
    png = plot_training(run, tmp_path / "plots" / "run.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    height, width = imread(str(png)).shape[:2]
    assert width > 2 * height  # the loss and the margin panels (accuracy has no values)


def test_training_section_tabulates_first_and_last_values(tmp_path: Path) -> None:
    from reasoner.training.plots import training_section

    run = tmp_path / "zo-run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"stage": "zo", "model": {"name": "m"}}))
    rows = [{"step": 0, "kind": "eval", "eval_loss": 1.5}]
    rows += [{"step": s, "kind": "train", "loss": 2.0 - 0.1 * s} for s in range(1, 4)]
    rows += [{"step": 3, "kind": "eval", "eval_loss": 1.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    markdown, plots = training_section([run], tmp_path / "report")
    assert "| zo (unfinished) | 3 | 1.9000 -> 1.7000 | 1.5000 -> 1.2500 |" in markdown
    assert [p.name for p in plots] == ["training_zo-run.png"] and plots[0].is_file()
