"""The trainer stages end to end on a tiny randomly initialised Llama that shares SmolLM2's
tokenizer and chat template (seconds per run): run folder, adapter folder, metrics, and resume
after a run is cut short. The real model runs in tests/test_slow_training.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from reasoner.training import DPOConfig, SFTConfig, ZOConfig, train_stage
from reasoner.training.run_folder import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def _sft_records(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": str(i),
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "completion": [{"role": "assistant", "content": f"{i} + {i} = {2 * i}."}],
            "answer": str(2 * i),
        }
        for i in range(n)
    ]


def _pairs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": r["prompt"],
            "chosen": r["completion"],
            "rejected": [{"role": "assistant", "content": f"It is {3 * i + 1}."}],
        }
        for i, r in enumerate(_sft_records(n))
    ]


def _adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _steps(run: Path, kind: str = "train") -> list[int]:
    return [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == kind]


def _zo_config(model: str, out: Path) -> ZOConfig:
    return ZOConfig.model_validate(
        {
            "model": {"name": model},
            "data": {"file": "given-in-process.jsonl"},
            "train": {"max_steps": 5, "batch_size": 2, "save_steps": 2, "learning_rate": 1e-2},
            "out": str(out),
            "progress": False,
        }
    )


def test_zo_run_folder_and_adapter(tiny_model: str, tmp_path: Path) -> None:
    config = _zo_config(tiny_model, tmp_path / "zo")
    config.train.eval_steps = 5
    # held-out records are other questions: a stage refuses eval data it trains on
    adapter = train_stage(config, _sft_records(6), eval_records=_sft_records(9)[6:])
    assert adapter == tmp_path / "zo" / "adapter"
    files = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert {"reasoner-training.yaml", "reasoner-manifest.json"} <= files
    manifest = json.loads((adapter / "reasoner-manifest.json").read_text())
    assert manifest["stage"] == "zo" and manifest["base_model"]["folder_sha256"]
    assert manifest["data"]["records"] == 6 and len(manifest["data"]["sha256"]) == 64
    rows = read_metrics(tmp_path / "zo" / "metrics.jsonl")
    assert _steps(tmp_path / "zo") == [1, 2, 3, 4, 5]
    assert _steps(tmp_path / "zo", "eval") == [0, 5]
    assert all(r["loss_plus"] != r["loss_minus"] for r in rows if r["kind"] == "train")
    weights = _adapter_weights(adapter)
    assert any(float(w.abs().sum()) > 0 for k, w in weights.items() if "lora_B" in k)
    summary = json.loads((tmp_path / "zo" / "summary.json").read_text())
    assert summary["trained_parameters"] > 0 and summary["resumed_from_step"] == 0
    # a finished run is not trained again
    assert train_stage(config, _sft_records(6)) == adapter


def test_zo_resumed_run_takes_the_uninterrupted_run_s_steps(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _sft_records(6)
    whole = train_stage(_zo_config(tiny_model, tmp_path / "whole"), records)

    from reasoner.training import zo as zo_module

    real_update = zo_module.MeZO.update
    calls = {"n": 0}

    def dies_in_step_4(self: Any, estimates: Any, lr: float) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # step 3 is logged, step 2 is the last checkpoint
            raise KeyboardInterrupt
        real_update(self, estimates, lr)

    monkeypatch.setattr(zo_module.MeZO, "update", dies_in_step_4)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_stage(_zo_config(tiny_model, cut), records)
    assert _steps(cut) == [1, 2, 3]
    monkeypatch.setattr(zo_module.MeZO, "update", real_update)
    resumed = train_stage(_zo_config(tiny_model, cut), records)
    assert _steps(cut) == [1, 2, 3, 4, 5]
    assert json.loads((cut / "summary.json").read_text())["resumed_from_step"] == 2
    a, b = _adapter_weights(whole), _adapter_weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_a_resumed_run_must_keep_its_config(tiny_model: str, tmp_path: Path) -> None:
    from reasoner.errors import ConfigError

    config = _zo_config(tiny_model, tmp_path / "zo")
    config.train.max_steps = 1
    train_stage(config, _sft_records(2))
    changed = _zo_config(tiny_model, tmp_path / "zo")
    changed.train.max_steps = 1
    changed.zo.eps = 0.5
    with pytest.raises(ConfigError, match=r"zo\.eps"):
        train_stage(changed, _sft_records(2))


def test_sft_resumes_from_its_last_checkpoint_without_repeating_steps(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reasoner.training import trainer_stage

    config = SFTConfig.model_validate(
        {
            "model": {"name": tiny_model},
            "data": {"file": "given-in-process.jsonl"},
            "train": {"max_steps": 4, "batch_size": 2, "save_steps": 2, "max_length": 64},
            "out": str(tmp_path / "sft"),
            "progress": False,
        }
    )
    real = trainer_stage.recording_callback

    def dies_after_step_3(log: Any, guard: Any) -> Any:
        callback = real(log, guard)
        on_log = callback.on_log

        def wrapped(args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            on_log(args, state, control, logs, **kw)
            if state.global_step == 3:
                raise KeyboardInterrupt

        callback.on_log = wrapped
        return callback

    monkeypatch.setattr(trainer_stage, "recording_callback", dies_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_stage(config, _sft_records(8))
    assert _steps(tmp_path / "sft") == [1, 2, 3]
    monkeypatch.setattr(trainer_stage, "recording_callback", real)
    adapter = train_stage(config, _sft_records(8))
    assert _steps(tmp_path / "sft") == [1, 2, 3, 4]
    assert json.loads((tmp_path / "sft" / "summary.json").read_text())["resumed_from_step"] == 2
    assert (adapter / "adapter_model.safetensors").is_file()


def test_dpo_logs_the_preference_margin(tiny_model: str, tmp_path: Path) -> None:
    config = DPOConfig.model_validate(
        {
            "model": {"name": tiny_model},
            "data": {"file": "given-in-process.jsonl"},
            "train": {"max_steps": 2, "batch_size": 2, "max_length": 64, "learning_rate": 1e-3},
            "nll_alpha": 1.0,
            "out": str(tmp_path / "dpo"),
            "progress": False,
        }
    )
    adapter = train_stage(config, _pairs(4))
    rows = [r for r in read_metrics(tmp_path / "dpo" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("rewards/margins" in r for r in rows)
    assert rows[1]["rewards/margins"] != 0.0  # the first step moved the policy off the reference
    assert (adapter / "adapter_config.json").is_file()


def test_dpo_continues_a_given_adapter_against_a_frozen_copy(
    tiny_model: str, tmp_path: Path
) -> None:
    first = train_stage(
        SFTConfig.model_validate(
            {
                "model": {"name": tiny_model},
                "data": {"file": "given-in-process.jsonl"},
                "train": {"max_steps": 1, "batch_size": 2, "max_length": 64},
                "out": str(tmp_path / "sft"),
                "progress": False,
            }
        ),
        _sft_records(2),
    )
    second = train_stage(
        DPOConfig.model_validate(
            {
                "model": {"name": tiny_model, "adapter": str(first)},
                "data": {"file": "given-in-process.jsonl"},
                "train": {"max_steps": 1, "batch_size": 2, "max_length": 64, "learning_rate": 1e-2},
                "out": str(tmp_path / "dpo"),
                "progress": False,
            }
        ),
        _pairs(2),
    )
    assert not (second / "ref").exists(), "the reference copy is not part of the adapter"
    a, b = _adapter_weights(first), _adapter_weights(second)
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((second / "reasoner-manifest.json").read_text())
    assert manifest["init_adapter"]["path"] == str(first)
