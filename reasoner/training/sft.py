"""Supervised fine-tuning with LoRA: TRL's SFTTrainer with a PEFT adapter, the loss on the
completion only, and the model's own chat template."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reasoner.training.config import SFTConfig
from reasoner.training.data import Record
from reasoner.training.trainer_stage import TRLTrainer, run_trainer_stage


def train_sft(
    config: SFTConfig,
    records: Sequence[Record] | None = None,
    out: str | Path | None = None,
    eval_records: Sequence[Record] | None = None,
) -> Path:
    """Train (or resume) and return the adapter folder. `records` (prompt/completion, or
    messages) replace `config.data`; `out` replaces `config.out`."""
    trainer = TRLTrainer("SFT", {"completion_only_loss": config.completion_only_loss})
    return run_trainer_stage(config, trainer, records, eval_records, out)
