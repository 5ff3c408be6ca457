"""`--shard i/n` and `reasoner merge`: the merged summary equals the unsharded run's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reasoner.cli import main
from reasoner.config import EvalConfig, build_config
from reasoner.errors import ConfigError
from reasoner.runner.evaluate import merge_shards, run_eval
from reasoner.runner.run_folder import RunFolder
from reasoner.runner.shard import parse_shard, select_shard

METRICS = (
    "problems",
    "scored",
    "correct",
    "accuracy",
    "accuracy_ci95",
    "verifier_errors",
    "no_answer",
    "tokens",
    "engine_requests",
    "complete",
)


def test_shards_are_strided_and_cover_everything_once() -> None:
    items = list(range(10))
    shards = [select_shard(items, f"{i}/3") for i in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(x for s in shards for x in s) == items
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def _config(out: Path, data_dir: Path, *extra: str) -> EvalConfig:
    return build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            "model.name=smollm2-135m-instruct",
            "model.backend=transformers",
            "model.dtype=float32",
            "limit=5",
            "sampling.max_tokens=32",
            f"out={out}",
            f"data_dir={data_dir}",
            "progress=false",
            *extra,
        ],
    )


def test_merged_shards_summarise_like_the_unsharded_run(
    tmp_path: Path, data_dir: Path, hf_generator: Any
) -> None:
    whole = run_eval(_config(tmp_path / "whole", data_dir), generator=hf_generator)
    for i in range(2):
        part = run_eval(
            _config(tmp_path / f"s{i}", data_dir, f"shard={i}/2"), generator=hf_generator
        )
        assert part["problems"] == (3 if i == 0 else 2)
    merged = merge_shards([tmp_path / "s1", tmp_path / "s0"], tmp_path / "merged")
    assert {k: merged[k] for k in METRICS} == {k: whole[k] for k in METRICS}
    assert merged["shard"] is None
    rows = RunFolder(tmp_path / "merged").load_results()
    assert sorted(int(r["problem"]["id"]) for r in rows) == [0, 1, 2, 3, 4]
    manifest = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    assert len(manifest["shard_manifests"]) == 2


def test_merge_refuses_incomplete_or_mismatched_shards(
    tmp_path: Path, data_dir: Path, hf_generator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run_eval(_config(tmp_path / "a0", data_dir, "shard=0/2", "limit=2"), generator=hf_generator)
    run_eval(
        _config(tmp_path / "b1", data_dir, "shard=1/2", "limit=2", "seed=3"), generator=hf_generator
    )
    assert main(["merge", str(tmp_path / "a0"), "--out", str(tmp_path / "m1")]) == 2
    assert "need each of shards 0..1 once" in capsys.readouterr().err
    assert (
        main(["merge", str(tmp_path / "a0"), str(tmp_path / "b1"), "--out", str(tmp_path / "m2")])
        == 2
    )
    assert "different config (seed)" in capsys.readouterr().err
