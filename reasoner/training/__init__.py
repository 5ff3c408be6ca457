"""Trainer stages (LoRA SFT, DPO, zeroth-order) and the closed loops built on them.

In-process API (what a loop calls between sampling and serving):

    records = build_records("sft", run_folders, max_per_problem=2)   # or "dpo": pairs
    adapter = train_stage(config)          # SFT / DPO / ZO / Reward config -> adapter folder
    adapter = train_sft(config, records, out)                         # or train_dpo / train_zo

Each returns the path of a standard PEFT adapter folder (adapter_config.json +
adapter_model.safetensors, with reasoner-training.yaml and reasoner-manifest.json beside them)
that every Generator serves per request (`GenerationRequest(adapter=path)`); full-weight ZO
returns a model folder instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from reasoner.registry import Registry
from reasoner.training.config import (
    DPOConfig,
    RewardConfig,
    SFTConfig,
    StageConfig,
    ZOConfig,
    load_stage_config,
)
from reasoner.training.data import (
    Record,
    build_records,
    dpo_pairs_from_runs,
    load_records,
    records_from_settings,
    sft_records_from_dataset,
    sft_records_from_runs,
)
from reasoner.training.divergence import TrainingDiverged
from reasoner.training.dpo import train_dpo
from reasoner.training.reward import train_reward
from reasoner.training.sft import train_sft
from reasoner.training.zo_stage import train_zo

#: Each stage's trainer, by the name a config's `stage:` gives (its config class is
#: `config.STAGE_CONFIGS[stage]`); each is called as (config, records, out, eval_records).
TRAINERS: Registry[Callable[..., Path]] = Registry(
    "training stage", {"sft": train_sft, "dpo": train_dpo, "zo": train_zo, "reward": train_reward}
)


def train_stage(
    config: StageConfig,
    records: Sequence[Record] | None = None,
    out: str | Path | None = None,
    eval_records: Sequence[Record] | None = None,
) -> Path:
    """The stage `config` is for; see train_sft / train_dpo / train_zo / train_reward."""
    return TRAINERS[config.stage](config, records, out, eval_records)


__all__ = [
    "TRAINERS",
    "DPOConfig",
    "Record",
    "RewardConfig",
    "SFTConfig",
    "StageConfig",
    "TrainingDiverged",
    "ZOConfig",
    "build_records",
    "dpo_pairs_from_runs",
    "load_records",
    "load_stage_config",
    "records_from_settings",
    "sft_records_from_dataset",
    "sft_records_from_runs",
    "train_dpo",
    "train_reward",
    "train_sft",
    "train_stage",
    "train_zo",
]
