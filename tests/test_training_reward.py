"""`reasoner train reward`: an outcome reward model trained with LoRA on preference pairs, then
served by the `reward-model` verifier from its adapter folder. Runs on the tiny random Llama
(tests/_tiny_model.py), so what is checked is the plumbing and that training moves the scores in
the direction of the pairs, not the quality of a real reward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reasoner.errors import DatasetError
from reasoner.training import RewardConfig, train_stage
from reasoner.training.reward import reward_records
from reasoner.types import Completion, Problem
from reasoner.verifiers.reward_model import RewardModelVerifier

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [
                {"role": "system", "content": "Solve it."},
                {"role": "user", "content": f"What is {i} + {i}?"},
            ],
            "chosen": [
                {"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is {2 * i}."}
            ],
            "rejected": [{"role": "assistant", "content": f"I think it is {3 * i + 1}"}],
        }
        for i in range(n)
    ]


def test_pairs_are_shown_as_the_verifier_scores_them() -> None:
    (record,) = reward_records(_pairs(1))
    assert record["prompt"] == [{"role": "user", "content": "What is 0 + 0?"}]
    with pytest.raises(DatasetError, match="record 0"):
        reward_records([{**_pairs(1)[0], "prompt": [{"role": "system", "content": "x"}]}])


def test_trained_reward_adapter_ranks_chosen_above_rejected(
    tiny_model: str, tmp_path: Path
) -> None:
    pairs = _pairs(12)

    def margin(verifier: RewardModelVerifier) -> list[float]:
        out = []
        for pair in pairs:
            problem = Problem("p", pair["prompt"][-1]["content"], None)
            chosen, rejected = verifier.verify_batch(
                [
                    (problem, Completion(pair["chosen"][0]["content"], "stop", 0, 0)),
                    (problem, Completion(pair["rejected"][0]["content"], "stop", 0, 0)),
                ]
            )
            out.append(chosen.score - rejected.score)
        return out

    config = RewardConfig.model_validate(
        {
            "model": {"name": tiny_model},
            "data": {"file": "given-in-process.jsonl"},
            "train": {"max_steps": 30, "batch_size": 4, "learning_rate": 5e-3, "save_steps": 30},
            "lora": {"r": 4, "alpha": 8},
            "out": str(tmp_path / "rm"),
            "progress": False,
        }
    )
    adapter = train_stage(config, pairs)
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("score" in key for key in weights), "the new reward head must be saved"
    assert any("lora_A" in key for key in weights)

    trained = margin(RewardModelVerifier(model=str(adapter), dtype="float32"))
    assert sum(m > 0 for m in trained) >= 10, trained
    summary = json.loads((tmp_path / "rm" / "summary.json").read_text())
    assert summary["stage"] == "reward"
    # a ranker that has learned nothing sits at log 2 = 0.693 (Bradley-Terry loss, equal scores)
    assert summary["loss_last"] < 0.3 < summary["loss_first"], summary
