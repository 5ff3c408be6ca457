"""What the SFT and DPO stages share: a TRL trainer run inside a training run folder.

The trainer's own checkpoints (`save_steps`) are what a killed run resumes from; a callback
appends each logged step to metrics.jsonl and stops a diverging run. What differs between the
stages is only which TRL trainer is built and with which settings, which `TRLTrainer` says.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoner.models.dtype import resolve_dtype
from reasoner.training.config import DPOConfig, PolicySettings, RewardConfig, SFTConfig
from reasoner.training.data import Record, stage_records, write_training_questions
from reasoner.training.divergence import DivergenceGuard, TrainingDiverged
from reasoner.training.policy import (
    Policy,
    adapter_sha256,
    load_policy,
    lora_config,
    training_manifest,
    use_cuda,
)
from reasoner.training.run_folder import (
    MetricsLog,
    TrainingRun,
    complete_checkpoints,
    default_out,
    remove_incomplete,
)

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_DONE = "trainer_state.json"  # the Trainer writes it last
# logged once at the end of train(): a summary, not a step
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second")

LoadModel = Callable[[PolicySettings], Policy]
PrepareRecords = Callable[[Sequence[Record]], list[Record]]
TrainerConfig = SFTConfig | DPOConfig | RewardConfig


def record_kind(stage: str) -> str:
    """The record format a stage trains on: a reward model learns from DPO's pairs."""
    return "dpo" if stage == "reward" else stage


def recording_callback(log: MetricsLog, guard: DivergenceGuard) -> Any:
    """A TrainerCallback (built here so transformers is imported only when training)."""
    from transformers import TrainerCallback

    class RecordMetrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if not logs or any(k in logs for k in SUMMARY_KEYS):
                return
            kind = "eval" if any(k.startswith("eval_") for k in logs) else "train"
            log.append({"step": int(state.global_step), "kind": kind, **logs})
            if kind == "train" and "loss" in logs:
                guard.check(int(state.global_step), float(logs["loss"]))

    return RecordMetrics()


def trainer_arguments(config: TrainerConfig, checkpoints: Path, evaluate: bool) -> dict[str, Any]:
    """TrainingArguments shared by TRL's SFTConfig, DPOConfig and RewardConfig."""
    t = config.train
    cuda = use_cuda()
    dtype = resolve_dtype(config.model.dtype, "training").dtype  # as load_policy resolves it
    return dict(
        output_dir=str(checkpoints),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a share of max_steps
        weight_decay=t.weight_decay,
        max_length=t.max_length,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.keep_checkpoints,
        save_only_model=False,  # resuming needs the optimizer and scheduler state
        eval_strategy="steps" if evaluate else "no",
        eval_steps=t.eval_steps or t.max_steps,
        eval_on_start=evaluate,
        per_device_eval_batch_size=t.eval_batch_size,
        report_to="none",
        disable_tqdm=not config.progress,
        use_cpu=not cuda,
        bf16=cuda and dtype == "bfloat16",
        fp16=cuda and dtype == "float16",
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
    )


@dataclass(frozen=True)
class TRLTrainer:
    """The TRL trainer a stage runs: `{name}Trainer` with `{name}Config(**arguments,
    **settings)`. Named rather than imported, so trl loads only when a stage trains."""

    name: str  # "SFT", "DPO", "Reward"
    settings: dict[str, Any] = field(default_factory=dict)  # the stage's own TRL config fields
    task_type: str = "CAUSAL_LM"  # of a fresh LoRA (SEQ_CLS for a reward head)

    def build(
        self,
        config: TrainerConfig,
        policy: Policy,
        arguments: dict[str, Any],
        train_ds: Any,
        eval_ds: Any,
    ) -> Any:
        import trl

        return getattr(trl, f"{self.name}Trainer")(
            model=policy.model,
            args=getattr(trl, f"{self.name}Config")(**arguments, **self.settings),
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=policy.tokenizer,
            # a loaded adapter (model.adapter) is trained as it is; otherwise a fresh LoRA
            peft_config=None if config.model.adapter else lora_config(config.lora, self.task_type),
        )


def run_trainer_stage(
    config: TrainerConfig,
    trainer_spec: TRLTrainer,
    records: Sequence[Record] | None,
    eval_records: Sequence[Record] | None,
    out: str | Path | None,
    hint: str | None = None,
    load_model: LoadModel = load_policy,
    prepare: PrepareRecords = list,
) -> Path:
    """Train (or resume, or return the finished result of) one SFT/DPO/reward run; the adapter
    path. `hint` is what a diverging run's error advises (default: a lower learning rate),
    `load_model` builds the model to train, `prepare` rewrites the records it sees."""
    if hint is None:
        hint = (
            f"Lower train.learning_rate (now {config.train.learning_rate:g}) and start a new run "
            "folder (out)."
        )
    import datasets

    run = TrainingRun(out or config.out or default_out(config.stage))
    dumped = config.model_dump(mode="json")
    if run.finished:
        run.prepare(dumped)
        return run.result()
    kind = record_kind(config.stage)
    data = stage_records(kind, config.data, config.eval_data, records, eval_records)
    run.prepare(dumped)
    write_training_questions(run.path, data.train)
    records = prepare(data.train)
    eval_records = None if data.eval is None else prepare(data.eval)
    policy = load_model(config.model)
    manifest = training_manifest(
        config.stage, policy, config.model, records, eval_records, data.source, config.train.seed
    )
    run.write_manifest(manifest)
    remove_incomplete(run.checkpoints, CHECKPOINT_DONE, CHECKPOINT_PREFIX)
    done = complete_checkpoints(run.checkpoints, CHECKPOINT_DONE, CHECKPOINT_PREFIX)
    resume_step, resume_from = done[-1] if done else (0, None)
    run.metrics.resume_at(resume_step)
    guard = DivergenceGuard(config.divergence, config.stage, hint)
    guard.seed([r["loss"] for r in run.metrics.rows() if r.get("kind") == "train" and "loss" in r])

    train_ds = datasets.Dataset.from_list([_columns(r, kind) for r in records])
    eval_ds = (
        None
        if eval_records is None
        else datasets.Dataset.from_list([_columns(r, kind) for r in eval_records])
    )
    arguments = trainer_arguments(config, run.checkpoints, eval_ds is not None)
    trainer = trainer_spec.build(config, policy, arguments, train_ds, eval_ds)
    trainer.add_callback(recording_callback(run.metrics, guard))
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except TrainingDiverged as exc:
        kept = complete_checkpoints(run.checkpoints, CHECKPOINT_DONE, CHECKPOINT_PREFIX)
        where = f" The last checkpoint is {kept[-1][1]}." if kept else ""
        raise TrainingDiverged(f"{exc}{where}") from None
    staged = run.path / (run.adapter_dir.name + ".tmp")
    if staged.exists():
        shutil.rmtree(staged)
    model = trainer.model
    if getattr(model, "peft_config", None) and "default" in model.peft_config:
        # DPO from a given adapter keeps a frozen copy named "ref": not part of the result
        model.save_pretrained(str(staged), selected_adapters=["default"])
    else:
        model.save_pretrained(str(staged))
    run.finish_result(staged, run.adapter_dir, dumped)
    run.write_summary(summarize(run, config.stage, resume_step, time.perf_counter() - started))
    return run.adapter_dir


def _columns(record: Record, stage: str) -> Record:
    """Only the columns TRL reads: extra ones (id, answer) would be passed to the collator."""
    wanted: tuple[str, ...] = (
        ("prompt", "chosen", "rejected") if stage == "dpo" else ("prompt", "completion")
    )
    if stage == "sft" and "prompt" not in record:
        wanted = ("messages",) if "messages" in record else ("text",)
    return {k: record[k] for k in wanted}


def summarize(run: TrainingRun, stage: str, resumed_from: int, wall_s: float) -> dict[str, Any]:
    rows = run.metrics.rows()
    train = [r for r in rows if r.get("kind") == "train" and "loss" in r]
    evals = [r for r in rows if r.get("kind") == "eval"]
    summary: dict[str, Any] = {
        "stage": stage,
        "result": run.adapter_dir.name,
        "adapter_sha256": adapter_sha256(run.adapter_dir),
        "steps": train[-1]["step"] if train else 0,
        "resumed_from_step": resumed_from,
        "wall_s_last_session": round(wall_s, 1),
        "loss_first": train[0]["loss"] if train else None,
        "loss_last": train[-1]["loss"] if train else None,
    }
    if evals:
        summary["eval_first"] = {k: v for k, v in evals[0].items() if k.startswith("eval_")}
        summary["eval_last"] = {k: v for k, v in evals[-1].items() if k.startswith("eval_")}
    plain: dict[str, Any] = json.loads(json.dumps(summary, default=float))
    return plain
