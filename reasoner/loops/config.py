"""The config of `reasoner iterate`: which problems to learn from, how to sample and check them,
which training stage turns the verified samples into an adapter, and for how many rounds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoner.config import SamplingSettings, StrategySettings, UserDataset
from reasoner.models.config import ModelConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemSlice(_Strict):
    """The first `limit` problems of a benchmark split, or of the user's own JSONL file (scored
    with the benchmark's prompt and verifier)."""

    benchmark: str = "gsm8k"
    split: str | None = None  # None: the benchmark's default split
    dataset: UserDataset | None = None
    limit: int | None = Field(default=None, ge=1)
    data_dir: str | None = None


class SampleStage(_Strict):
    """How each round samples the training problems. Problems whose pass rate is at most
    `hard_threshold` get `hard_n` more samples (DART-Math's difficulty-aware rejection tuning):
    the easy problems already have correct solutions, the hard ones are where new data comes
    from."""

    strategy: StrategySettings = StrategySettings(name="self-consistency", n=4)
    sampling: SamplingSettings = SamplingSettings(temperature=0.7)
    hard_n: int = Field(default=0, ge=0)
    hard_threshold: float = Field(default=0.0, ge=0.0, le=1.0)


class EvalStage(_Strict):
    strategy: StrategySettings = StrategySettings()
    sampling: SamplingSettings = SamplingSettings()


class IterateConfig(_Strict):
    stage: Literal["sft", "dpo", "zo"] = "sft"  # sft: expert iteration; dpo: iterative DPO
    rounds: int = Field(default=2, ge=1)
    model: ModelConfig = ModelConfig(enable_lora=True)
    train_problems: ProblemSlice = ProblemSlice(split="train", limit=64)
    heldout: ProblemSlice = ProblemSlice(split="test", limit=50)
    verifier: str | None = None  # None: the benchmark's verifier
    sample: SampleStage = SampleStage()
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
    seed: int = 0
    out: str | None = None
    progress: bool = True
