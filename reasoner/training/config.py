"""Typed configs of the trainer stages (`reasoner train sft|dpo|zo --config X --set k=v`).

One model per stage, so a YAML file says which stage it is for (`stage:`) and a key that belongs
to another stage is an error rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasoner.config import build_config, load_yaml
from reasoner.errors import ConfigError
from reasoner.models.embedded import DEFAULT_MODEL
from reasoner.registry import Registry

Stage = Literal["sft", "dpo", "zo", "reward"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicySettings(_Strict):
    """The base model, and optionally an adapter to keep training (a previous round's)."""

    #: the base model: an embedded alias, a local folder or a hub id
    name: str = DEFAULT_MODEL
    # auto (reasoner/models/dtype.py): bf16 on a bf16-capable GPU or CPU (AVX512-BF16/AMX),
    # float32 elsewhere; always float32 for ZO, whose +eps/-eps perturbation of 1e-3 is below
    # bf16's resolution for most weights and would not cancel.
    dtype: DType = "auto"
    #: a PEFT adapter folder to keep training (a previous round's); None: a fresh LoRA
    adapter: str | None = None


class LoraSettings(_Strict):
    #: the LoRA rank
    r: int = Field(default=8, ge=1)
    #: the LoRA scaling numerator (scale = alpha / r)
    alpha: int = Field(default=16, ge=1)
    #: dropout on the LoRA path
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # "all-linear": every linear layer but the output head, which vLLM's LoRA serves
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class DataSettings(_Strict):
    """Where the records come from: exactly one of `runs`, `file` or `dataset`."""

    runs: list[str] = []  # run folders written by `reasoner eval` (their results.jsonl)
    file: str | None = None  # an HF-datasets JSON / JSONL / parquet file of records
    dataset: str | None = None  # a data manifest (data/<name>.yaml): its worked solutions
    split: str = "train"  # dataset: which split
    solution_field: str = "answer"  # dataset: the field that holds a worked solution
    prompt: str = "math_cot"  # dataset: the prompt template questions are rendered with
    data_dir: str | None = None  # dataset: the data folder (default: $REASONER_DATA_DIR)
    # leave out the records of the first N problems (a held-out slice), then keep only those of
    # the next `limit` problems: cut between problems (told apart by normalised question text),
    # so no problem has records on both sides
    skip: int = Field(default=0, ge=0)
    #: then keep only the first N problems' records
    limit: int | None = Field(default=None, ge=1)
    max_per_problem: int | None = Field(
        default=None, ge=1
    )  # runs: completions (SFT) or pairs (DPO)
    require_stop: bool = True  # runs: leave out completions cut off by max_tokens
    seed: int = 0  # runs: which pairs are drawn when a problem has more than max_per_problem
    # runs, DPO: a data manifest whose worked solutions (of `split`) are the chosen answer of
    # problems none of whose samples is correct (a weak policy still gets pairs)
    reference_dataset: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSettings:
        given = [name for name in ("runs", "file", "dataset") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one source of records: data.runs (run folders), data.file (a "
                "JSON/JSONL/parquet file) or data.dataset (a data manifest); "
                f"got {given or 'none'}"
            )
        return self


class OptimSettings(_Strict):
    #: optimizer steps
    max_steps: int = Field(default=100, ge=1)
    #: records per device batch
    batch_size: int = Field(default=4, ge=1)
    #: batches accumulated per optimizer step
    grad_accum: int = Field(default=1, ge=1)
    #: peak learning rate
    learning_rate: float = Field(default=2e-4, gt=0)
    #: learning-rate schedule after warm-up
    lr_scheduler: Literal["constant", "linear", "cosine"] = "linear"
    #: share of max_steps spent warming the learning rate up
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: AdamW weight decay
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_length: int = Field(default=1024, ge=8)  # tokens of prompt + completion
    #: the trainer's seed (data order, LoRA init)
    seed: int = 0
    save_steps: int = Field(
        default=50, ge=1
    )  # checkpoint interval (what a killed run resumes from)
    #: checkpoints kept on disk (older ones are deleted)
    keep_checkpoints: int = Field(default=2, ge=1)
    eval_steps: int | None = Field(default=None, ge=1)  # held-out loss every N steps (and at 0)
    #: records per batch of the held-out evaluation
    eval_batch_size: int = Field(default=8, ge=1)


class DivergenceSettings(_Strict):
    """Stop with a clear message rather than train on: a NaN or infinite loss always stops;
    so does a loss whose mean over the last `window` steps exceeds `max_ratio` times its mean
    over the first `window` steps."""

    #: stop when the recent mean loss exceeds this multiple of the first
    max_ratio: float = Field(default=4.0, gt=1.0)
    #: steps averaged at the start and at the end
    window: int = Field(default=5, ge=1)


class _StageConfig(_Strict):
    model: PolicySettings = PolicySettings()
    data: DataSettings
    eval_data: DataSettings | None = None  # held-out records for the eval loss / margin
    #: the LoRA adapter trained
    lora: LoraSettings = LoraSettings()
    divergence: DivergenceSettings = DivergenceSettings()
    out: str | None = None  # the training run folder; an existing one is resumed
    #: show the trainer's progress bar
    progress: bool = True


class SFTConfig(_StageConfig):
    #: this config's stage (a file for another stage is refused)
    stage: Literal["sft"] = "sft"
    #: optimizer settings
    train: OptimSettings = OptimSettings()
    # loss on the answer tokens only, not on the prompt the model is given
    completion_only_loss: bool = True


class DPOOptimSettings(OptimSettings):
    learning_rate: float = Field(default=5e-6, gt=0)


class DPOConfig(_StageConfig):
    #: this config's stage (a file for another stage is refused)
    stage: Literal["dpo"] = "dpo"
    #: optimizer settings
    train: DPOOptimSettings = DPOOptimSettings()
    #: DPO's KL strength: higher keeps the policy nearer the reference
    beta: float = Field(default=0.1, gt=0)
    loss_type: str = "sigmoid"  # any of TRL's DPO losses
    # weight of an NLL term on the chosen answer (token mean), added to the DPO loss: 1.0 is
    # Iterative Reasoning Preference Optimization (Pang et al., 2024); 0 is plain DPO
    nll_alpha: float = Field(default=0.0, ge=0.0)


class RewardOptimSettings(OptimSettings):
    learning_rate: float = Field(default=1e-4, gt=0)


class RewardConfig(_StageConfig):
    """An outcome reward model: preference pairs (data.runs: correct vs incorrect samples of the
    same problem, or data.file with prompt/chosen/rejected) train a one-logit head with LoRA."""

    #: this config's stage (a file for another stage is refused)
    stage: Literal["reward"] = "reward"
    #: optimizer settings
    train: RewardOptimSettings = RewardOptimSettings()
    # TRL's auxiliary loss pulling the rewards' mean towards 0 (Eisenstein et al., 2023);
    # None: off
    center_rewards_coefficient: float | None = Field(default=None, ge=0)


# MeZO's published settings (Malladi et al., 2023, Table 16 and the repository's examples for
# autoregressive OPT models): full weights lr 1e-6 / eps 1e-3, LoRA lr 1e-4 / eps 1e-2,
# batch 16, constant learning rate, no weight decay, 20k steps. Its users report (MeZO#6) that
# on their own data these learning rates barely move the loss of small models and that LoRA
# needed a far larger one (4e-2 with eps 5e-3 on OPT-125m); hence the divergence guard, and
# configs that set the learning rate for the model at hand.
MEZO_DEFAULTS: dict[str, dict[str, float]] = {
    "all": {"learning_rate": 1e-6, "eps": 1e-3},
    "lora": {"learning_rate": 1e-4, "eps": 1e-2},
}


class ZOOptimSettings(OptimSettings):
    batch_size: int = Field(default=16, ge=1)
    # None: MEZO_DEFAULTS[zo.params]
    learning_rate: float | None = Field(default=None, gt=0)  # type: ignore[assignment]
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"


class ZOSettings(_Strict):
    params: Literal["lora", "all"] = "lora"  # LoRA matrices, or every weight of the model
    eps: float | None = Field(default=None, gt=0)  # perturbation scale; None: MEZO_DEFAULTS[params]
    n_spsa: int = Field(default=1, ge=1)  # SPSA estimates averaged per step (n-SPSA)
    #: loss: the records' NLL; reward: the verifier's score of sampled answers
    objective: Literal["loss", "reward"] = "loss"
    # reward objective: the verifier scores sampled answers against each record's `answer`
    verifier: str = "math"
    #: keyword options of that verifier
    verifier_options: dict[str, Any] = {}
    samples: int = Field(default=4, ge=1)  # per record and evaluation
    #: reward objective: sampling temperature
    temperature: float = Field(default=0.7, ge=0.0)
    #: reward objective: tokens per sampled answer
    max_new_tokens: int = Field(default=256, ge=1)


# Weight dtypes MeZO accepts. "auto" (the machine-chosen dtype of the other stages) means float32
# here: see ZOConfig._float32_weights.
ZO_DTYPES = ("float32", "auto")


class ZOConfig(_StageConfig):
    #: this config's stage (a file for another stage is refused)
    stage: Literal["zo"] = "zo"
    #: optimizer settings
    train: ZOOptimSettings = ZOOptimSettings()
    #: the zeroth-order (MeZO) estimator's settings
    zo: ZOSettings = ZOSettings()

    @model_validator(mode="after")
    def _float32_weights(self) -> ZOConfig:
        """MeZO runs in float32 only. In bf16 the in-place +eps/-2eps/+eps moves do not cancel
        (a 1e-3 step is below bf16's resolution for weights near 1: the restored weights drifted
        2.3% in a bf16 check, 1e-5 in fp32) and L+ - L- is mostly rounding noise. An fp32
        master copy would fix the weights but not the bf16 forward pass, and would cost 3x the
        memory MeZO exists to save, so lower precision is refused instead."""
        if str(self.model.dtype) not in ZO_DTYPES:
            raise ValueError(
                f"model.dtype: {self.model.dtype!r} is not supported by the zo stage; MeZO "
                "perturbs weights in place and needs float32 (set model.dtype: float32, or auto, "
                "which means float32 for zo)"
            )
        return self

    @property
    def learning_rate(self) -> float:
        value = self.train.learning_rate
        return MEZO_DEFAULTS[self.zo.params]["learning_rate"] if value is None else value

    @property
    def eps(self) -> float:
        value = self.zo.eps
        return MEZO_DEFAULTS[self.zo.params]["eps"] if value is None else value


StageConfig = SFTConfig | DPOConfig | ZOConfig | RewardConfig
STAGE_CONFIGS: Registry[type[SFTConfig] | type[DPOConfig] | type[ZOConfig] | type[RewardConfig]] = (
    Registry(
        "training stage",
        {"sft": SFTConfig, "dpo": DPOConfig, "zo": ZOConfig, "reward": RewardConfig},
    )
)


def load_stage_config(
    stage: str, path: str | None = None, overrides: list[str] | None = None
) -> StageConfig:
    """A stage's config from YAML plus dotted overrides; a file written for another stage is
    refused by name rather than by a list of unknown keys."""
    config_class = STAGE_CONFIGS[stage]  # first: an unknown stage is named before the file
    base = load_yaml(path) if path else {}
    declared = base.get("stage", stage)
    if declared != stage:
        raise ConfigError(f"{path}: a config for stage {declared!r}, not {stage!r}")
    return build_config(config_class, base, overrides, source=path or "command line")
