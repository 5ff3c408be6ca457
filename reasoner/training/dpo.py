"""Direct preference optimisation with LoRA (TRL's DPOTrainer), optionally with an NLL term on
the chosen answer: Iterative Reasoning Preference Optimization (Pang et al., 2024) adds the
chosen answer's length-normalised negative log-likelihood to the DPO loss, which keeps the
likelihood of correct reasoning from falling while the margin grows. In TRL that is the "sft"
loss weighted beside the DPO loss.

The reference model is the policy with its adapter disabled (a fresh adapter), or a frozen copy
of the adapter it starts from (`model.adapter`, as iterative DPO's rounds do)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasoner.training.config import DPOConfig
from reasoner.training.data import Record
from reasoner.training.trainer_stage import TRLTrainer, run_trainer_stage


def dpo_loss_settings(config: DPOConfig) -> dict[str, Any]:
    if config.nll_alpha > 0:
        return {"loss_type": [config.loss_type, "sft"], "loss_weights": [1.0, config.nll_alpha]}
    return {"loss_type": [config.loss_type]}


def train_dpo(
    config: DPOConfig,
    records: Sequence[Record] | None = None,
    out: str | Path | None = None,
    eval_records: Sequence[Record] | None = None,
) -> Path:
    """Train (or resume) and return the adapter folder. `records` (prompt/chosen/rejected)
    replace `config.data`; `out` replaces `config.out`."""

    trainer = TRLTrainer("DPO", {"beta": config.beta, **dpo_loss_settings(config)})
    hint = (
        f"Lower train.learning_rate (now {config.train.learning_rate:g}) or raise beta (now "
        f"{config.beta:g}) and start a new run folder (out)."
    )
    return run_trainer_stage(config, trainer, records, eval_records, out, hint)
