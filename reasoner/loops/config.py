"""The config of `reasoner iterate`: which problems to learn from, how to sample and check them,
which training stage turns the verified samples into an adapter, and for how many rounds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasoner.config import SamplingSettings, StrategySettings, UserDataset
from reasoner.models.config import ModelConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemSlice(_Strict):
    """The first `limit` problems of a benchmark split, or of the user's own JSONL file (scored
    with the benchmark's prompt and verifier)."""

    #: a benchmark name from `reasoner list`
    benchmark: str = "gsm8k"
    split: str | None = None  # None: the benchmark's default split
    #: a user's own JSONL file in place of the benchmark's data
    dataset: UserDataset | None = None
    #: the first N problems; None: all
    limit: int | None = Field(default=None, ge=1)
    #: the benchmark data folder; None: $REASONER_DATA_DIR or ../shared/data
    data_dir: str | None = None


class SampleStage(_Strict):
    """How each round samples the training problems: `strategy.n` samples each, then, by
    `method` (see reasoner.loops.sampling_plan):

    - `hard_n`: problems whose pass rate is at most `hard_threshold` get `hard_n` more samples
      (one extra batch);
    - `uniform` (DART-Math Uniform): batched rounds of `round_n` samples until every problem has
      `k` correct responses or has had `max_samples` samples;
    - `prop2diff` (DART-Math Prop2Diff): the same, with a target of correct responses that
      grows with difficulty (fail rate of the first samples), `k` for the hardest problem.

    With uniform / prop2diff a problem's training records are capped at its target."""

    #: how each training problem is sampled (n samples per problem)
    strategy: StrategySettings = StrategySettings(name="self-consistency", n=4)
    #: sampling settings of those samples
    sampling: SamplingSettings = SamplingSettings(temperature=0.7)
    #: hard_n, or DART-Math's uniform / prop2diff (see above)
    method: Literal["hard_n", "uniform", "prop2diff"] = "hard_n"
    #: hard_n: extra samples for a problem at or under hard_threshold
    hard_n: int = Field(default=0, ge=0)
    #: hard_n: the pass rate at or under which a problem is hard
    hard_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    k: int = Field(default=4, ge=1)  # uniform / prop2diff: correct responses wanted
    max_samples: int = Field(default=32, ge=1)  # uniform / prop2diff: per-problem budget
    round_n: int | None = Field(default=None, ge=1)  # per extra round; None: strategy.n

    @model_validator(mode="after")
    def _one_method(self) -> SampleStage:
        if self.method != "hard_n" and self.hard_n:
            raise ValueError(
                f"hard_n: the {self.method} method samples to a quota (k, max_samples); "
                "set hard_n to 0 or use method: hard_n"
            )
        if self.method != "hard_n" and self.strategy.n > self.max_samples:
            raise ValueError(
                f"max_samples: {self.max_samples} is below the first round's strategy.n "
                f"({self.strategy.n}); the budget counts those samples too"
            )
        return self


class EvalStage(_Strict):
    #: the strategy each round's held-out evaluation uses
    strategy: StrategySettings = StrategySettings()
    #: sampling settings of the held-out evaluation
    sampling: SamplingSettings = SamplingSettings()


class IterateConfig(_Strict):
    stage: Literal["sft", "dpo", "zo"] = "sft"  # sft: expert iteration; dpo: iterative DPO
    #: sample-verify-train rounds
    rounds: int = Field(default=2, ge=1)
    #: the base model; LoRA serving is enabled so each round serves its adapter
    model: ModelConfig = ModelConfig(enable_lora=True)
    #: the problems sampled and trained on
    train_problems: ProblemSlice = ProblemSlice(split="train", limit=64)
    #: the problems each round is evaluated on (never trained on: checked)
    heldout: ProblemSlice = ProblemSlice(split="test", limit=50)
    verifier: str | None = None  # None: the benchmark's verifier
    #: how the training problems are sampled
    sample: SampleStage = SampleStage()
    #: how the held-out problems are evaluated
    eval: EvalStage = EvalStage()
    # where each round's training starts: the base model, or the previous round's adapter
    init: Literal["base", "last"] = "last"
    # accumulate: train on the verified data of every round so far (real data is kept, which
    # avoids collapse: Gerstgrasser et al., 2024); replace: only this round's
    data: Literal["accumulate", "replace"] = "accumulate"
    max_per_problem: int | None = Field(default=4, ge=1)  # SFT solutions or DPO pairs per problem
    # the training stage's own config (the keys of `reasoner train <stage>`), without model,
    # data and out, which each round sets
    train: dict[str, Any] = {}
    # child: each round's training runs in its own process, whose memory is returned when it
    # exits (the engine stays up beside it); inline: in this process (tests, debugging)
    train_process: Literal["child", "inline"] = "child"
    #: the loop's seed (sampling and training)
    seed: int = 0
    #: the loop's folder; an existing one is resumed
    out: str | None = None
    #: show progress bars
    progress: bool = True
