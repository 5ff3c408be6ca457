"""Outcome reward model trained on the policy's own verified samples (TRL's RewardTrainer with
a LoRA on a one-logit sequence-classification head).

Pairs are the DPO stage's (a correct and an incorrect sample of the same problem), so the model
learns what the verifier rewards in the policy's own distribution, as in V-STaR (Hosseini et al.,
2024) and the ORM baselines of Cobbe et al. (2021) and Lightman et al. (2023). The pairs are
re-rendered as the `reward-model` verifier scores them, a user turn holding the question and an
assistant turn holding the answer, without the sampling prompt's system message: a model trained
on one text format and served on another would be scoring text it never saw.

The result is a PEFT adapter folder for a sequence-classification model; the `reward-model`
verifier loads it by path (`--scorer reward-model --set strategy.scorer.options.model=OUT/adapter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasoner.errors import DatasetError
from reasoner.models.dtype import resolve_dtype
from reasoner.training.config import PolicySettings, RewardConfig
from reasoner.training.data import Record
from reasoner.training.policy import Policy
from reasoner.training.trainer_stage import TRLTrainer, run_trainer_stage


def load_reward_model(settings: PolicySettings) -> Policy:
    """The base model with a fresh one-logit head (or a reward adapter to keep training)."""
    from reasoner.verifiers.reward_model import load_sequence_classifier

    dtype = resolve_dtype(settings.dtype, "training")
    model, tokenizer, resolved = load_sequence_classifier(
        settings.name if settings.adapter is None else settings.adapter,
        dtype.dtype,
        trainable=True,
    )
    return Policy(model, tokenizer, resolved, dtype)


def question_turn(prompt: Any, where: str) -> list[dict[str, str]]:
    """The last user turn of a chat prompt (the question as the verifier renders it)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        raise DatasetError(f"{where}: a reward pair's prompt has no user turn")
    return [{"role": "user", "content": users[-1]["content"]}]


def reward_records(records: Sequence[Record]) -> list[Record]:
    return [
        {**r, "prompt": question_turn(r["prompt"], f"record {i}")} for i, r in enumerate(records)
    ]


def train_reward(
    config: RewardConfig,
    records: Sequence[Record] | None = None,
    out: str | Path | None = None,
    eval_records: Sequence[Record] | None = None,
) -> Path:
    """Train (or resume) and return the adapter folder. `records` (prompt/chosen/rejected)
    replace `config.data`; `out` replaces `config.out`."""

    settings = {"center_rewards_coefficient": config.center_rewards_coefficient}
    return run_trainer_stage(
        config,
        TRLTrainer("Reward", settings, task_type="SEQ_CLS"),
        records,
        eval_records,
        out,
        load_model=load_reward_model,
        prepare=reward_records,
    )
