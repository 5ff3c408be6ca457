"""Supervised fine-tuning with LoRA: TRL's SFTTrainer with a PEFT adapter, the loss on the
completion only, and the model's own chat template."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasoner.training.config import SFTConfig
from reasoner.training.data import Record
from reasoner.training.policy import Policy, lora_config
from reasoner.training.trainer_stage import run_trainer_stage


def train_sft(
    config: SFTConfig,
    records: Sequence[Record] | None = None,
    out: str | Path | None = None,
    eval_records: Sequence[Record] | None = None,
) -> Path:
    """Train (or resume) and return the adapter folder. `records` (prompt/completion, or
    messages) replace `config.data`; `out` replaces `config.out`."""

    def build(policy: Policy, arguments: dict[str, Any], train_ds: Any, eval_ds: Any) -> Any:
        from trl import SFTConfig as TRLSFTConfig
        from trl import SFTTrainer

        args = TRLSFTConfig(**arguments, completion_only_loss=config.completion_only_loss)
        return SFTTrainer(
            model=policy.model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=policy.tokenizer,
            # a loaded adapter (model.adapter) is trained as it is; otherwise a fresh LoRA
            peft_config=None if config.model.adapter else lora_config(config.lora),
        )

    hint = (
        f"Lower train.learning_rate (now {config.train.learning_rate:g}) and start a new run "
        "folder (out)."
    )
    return run_trainer_stage(config, build, hint, records, eval_records, out)
