"""The zeroth-order stage: MeZO on the LoRA matrices or on every weight, with the LM loss or a
verifier's reward as the objective, in a resumable training run folder.

Everything random is a function of (seed, step): the batch, the perturbation directions and
the sampling seed of the reward objective. A checkpoint therefore only holds the trained
weights and the step, and a resumed run takes exactly the steps an uninterrupted run would
have taken. Both halves of an SPSA estimate see the same batch and, for the reward, the same
sampling seed (common random numbers), so their difference measures the perturbation, not
the noise.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reasoner.errors import ConfigError, ReasonerError
from reasoner.training.config import ZOConfig
from reasoner.training.data import Record, stage_records, write_training_questions
from reasoner.training.divergence import DivergenceGuard, TrainingDiverged
from reasoner.training.policy import (
    Policy,
    adapter_sha256,
    load_policy,
    lora_config,
    training_manifest,
)
from reasoner.training.run_folder import (
    TrainingRun,
    complete_checkpoints,
    default_out,
    prune,
    remove_incomplete,
)
from reasoner.training.tokens import (
    IGNORE,
    batch_indices,
    collate,
    lm_loss,
    mean_loss,
    tokenize_records,
)
from reasoner.training.zo import MeZO, step_seed

CHECKPOINT_PREFIX = "zo-step-"
CHECKPOINT_DONE = "state.json"
WEIGHTS = "params.safetensors"

Objective = Callable[[list[int], int], float]  # (record indices, step) -> value to minimise


def trainable(policy: Policy, config: ZOConfig) -> tuple[Any, list[tuple[str, Any]]]:
    """The model to perturb and its parameters: the LoRA matrices (a fresh adapter, or the one
    in model.adapter) or every weight (an adapter given is merged in first)."""
    import torch
    from peft import PeftModel, get_peft_model

    model = policy.model
    if config.zo.params == "lora":
        if not isinstance(model, PeftModel):
            torch.manual_seed(config.train.seed)  # LoRA's A matrices start random: seeded
            model = get_peft_model(model, lora_config(config.lora))
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    else:
        if isinstance(model, PeftModel):
            model = model.merge_and_unload()
        named = list(model.named_parameters())  # tied weights appear once
    for p in model.parameters():
        p.requires_grad_(False)  # no autograd anywhere: forward passes only
    model.eval()  # MeZO evaluates without dropout, so both halves see the same network
    return model, named


def loss_objective(model: Any, examples: Sequence[Any], pad_id: int, device: Any) -> Objective:
    def objective(indices: list[int], step: int) -> float:
        return lm_loss(model, collate([examples[i] for i in indices], pad_id, device))

    return objective


def reward_objective(
    model: Any, tokenizer: Any, records: Sequence[Record], config: ZOConfig
) -> tuple[Objective, Callable[[], None]]:
    """Minus the mean verifier score of sampled answers (verifier errors left out)."""
    from reasoner.models.config import ModelConfig
    from reasoner.models.hf_transformers import TransformersGenerator
    from reasoner.types import ChatMessage, GenerationRequest, Problem, SamplingParams
    from reasoner.verifiers import load as load_verifier

    z = config.zo
    verifier = load_verifier(z.verifier, **z.verifier_options)
    generator = TransformersGenerator.from_model(
        model, tokenizer, ModelConfig(name="policy", batch_size=config.train.batch_size * z.samples)
    )

    def objective(indices: list[int], step: int) -> float:
        sampling = SamplingParams(
            n=z.samples,
            temperature=z.temperature,
            max_tokens=z.max_new_tokens,
            seed=step_seed(config.train.seed, step, 1_000_000) & 0x7FFF_FFFF,
        )
        batch = [records[i] for i in indices]
        requests = [
            GenerationRequest(
                messages=tuple(ChatMessage(**m) for m in r["prompt"]), sampling=sampling
            )
            if isinstance(r["prompt"], list)
            else GenerationRequest(prompt=str(r["prompt"]), sampling=sampling)
            for r in batch
        ]
        outputs = generator.generate(requests)
        pairs = [
            (
                Problem(
                    id=str(r.get("id", i)), question=_question(r["prompt"]), answer=str(r["answer"])
                ),
                c,
            )
            for i, (r, completions) in zip(indices, zip(batch, outputs, strict=True), strict=True)
            for c in completions
        ]
        verdicts = verifier.verify_batch(pairs)
        scores = [v.score for v in verdicts if v.status != "error"]
        if not scores:
            raise ReasonerError(
                f"zo step {step}: the verifier {z.verifier!r} returned an error for every sample "
                f"({verdicts[0].feedback if verdicts else 'no samples'}); no reward to optimise"
            )
        return -sum(scores) / len(scores)

    return objective, verifier.close


def _question(prompt: Any) -> str:
    if isinstance(prompt, list):
        users = [m["content"] for m in prompt if m["role"] == "user"]
        return users[-1] if users else ""
    return str(prompt)


def learning_rate(config: ZOConfig, step: int) -> float:
    base, t = config.learning_rate, config.train
    warmup = math.ceil(t.warmup_ratio * t.max_steps)
    if warmup and step <= warmup:
        return base * step / warmup
    if t.lr_scheduler == "constant":
        return base
    progress = (step - warmup) / max(1, t.max_steps - warmup)
    if t.lr_scheduler == "linear":
        return base * (1 - progress)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def save_checkpoint(
    run: TrainingRun, step: int, named: Sequence[tuple[str, Any]], keep: int
) -> None:
    """Written to a hidden folder and renamed: a kill never leaves a half checkpoint that
    looks whole."""
    from safetensors.torch import save_file

    final = run.checkpoints / f"{CHECKPOINT_PREFIX}{step:07d}"
    staged = run.checkpoints / f".tmp-{final.name}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    save_file({n: p.data.detach().contiguous().cpu() for n, p in named}, str(staged / WEIGHTS))
    (staged / CHECKPOINT_DONE).write_text(json.dumps({"step": step}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staged.rename(final)
    prune(complete_checkpoints(run.checkpoints, CHECKPOINT_DONE, CHECKPOINT_PREFIX), keep)


def load_checkpoint(path: Path, named: Sequence[tuple[str, Any]]) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(path / WEIGHTS))
    missing = [n for n, _ in named if n not in saved]
    if missing:
        raise ConfigError(
            f"{path}: checkpoint lacks {missing[:3]}; was it made with other settings?"
        )
    for name, p in named:
        p.data.copy_(saved[name].to(p.device, p.dtype))


def train_zo(
    config: ZOConfig,
    records: Sequence[Record] | None = None,
    out: str | Path | None = None,
    eval_records: Sequence[Record] | None = None,
) -> Path:
    """Train (or resume) and return the adapter folder (zo.params=lora) or the model folder
    (zo.params=all)."""
    kind = f"zo-{config.zo.objective}"
    run = TrainingRun(out or config.out or default_out("zo"))
    dumped = config.model_dump(mode="json")
    if run.finished:
        run.prepare(dumped)
        return run.result()
    data = stage_records(kind, config.data, config.eval_data, records, eval_records)
    records, eval_records = data.train, data.eval
    run.prepare(dumped)
    write_training_questions(run.path, records)
    t = config.train
    policy = load_policy(config.model, purpose="zo")  # float32 for auto; bf16 is refused
    run.write_manifest(
        training_manifest("zo", policy, config.model, records, eval_records, data.source, t.seed)
    )
    model, named = trainable(policy, config)
    device = named[0][1].device
    pad_id = int(policy.tokenizer.pad_token_id)
    mezo = MeZO(named, eps=config.eps, weight_decay=t.weight_decay)

    closers: list[Callable[[], None]] = []
    if config.zo.objective == "loss":
        examples = tokenize_records(records, policy.tokenizer, t.max_length)
        empty = [
            i for i, e in enumerate(examples) if all(label == IGNORE for label in e.labels[1:])
        ]
        if empty:
            raise ConfigError(
                f"records {empty[:5]}: no completion token within train.max_length "
                f"({t.max_length}); raise it or shorten the prompts"
            )
        objective = loss_objective(model, examples, pad_id, device)
    else:
        objective, close = reward_objective(model, policy.tokenizer, records, config)
        closers.append(close)
    evaluate = _evaluator(config, model, policy, eval_records, pad_id, device, closers)

    remove_incomplete(run.checkpoints, CHECKPOINT_DONE, CHECKPOINT_PREFIX)
    for leftover in run.checkpoints.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    done = complete_checkpoints(run.checkpoints, CHECKPOINT_DONE, CHECKPOINT_PREFIX)
    start = 0
    if done:
        start, path = done[-1]
        load_checkpoint(path, named)
    run.metrics.resume_at(start)
    name = "loss" if config.zo.objective == "loss" else "reward"
    guard = DivergenceGuard(
        config.divergence,
        "zo",
        f"Lower train.learning_rate (now {config.learning_rate:g}) or change zo.eps (now "
        f"{config.eps:g}) and start a new run folder (out); the last checkpoint is kept in "
        f"{run.checkpoints}.",
    )
    guard.seed([r[name] for r in run.metrics.rows() if r.get("kind") == "train" and name in r])

    started = time.perf_counter()
    if evaluate is not None and start == 0:
        run.metrics.append({"step": 0, "kind": "eval", **evaluate()})
    progress = tqdm(
        total=t.max_steps, initial=start, unit="step", desc="zo", disable=not config.progress
    )
    try:
        for step in range(start + 1, t.max_steps + 1):
            indices = batch_indices(len(records), t.batch_size, step, t.seed)
            at_step = functools.partial(objective, indices, step)
            estimates = [
                mezo.estimate(at_step, step_seed(t.seed, step, k)) for k in range(config.zo.n_spsa)
            ]
            value = sum(e.loss for e in estimates) / len(estimates)
            if name == "reward":
                value = -value
            guard.check(step, value, name, bounded=name == "reward")
            lr = learning_rate(config, step)
            mezo.update(estimates, lr)
            if not mezo.params_finite():
                raise TrainingDiverged(
                    f"zo step {step}: the update made some weights NaN or infinite. {guard.hint}"
                )
            sign = -1.0 if name == "reward" else 1.0
            run.metrics.append(
                {
                    "step": step,
                    "kind": "train",
                    name: value,
                    f"{name}_plus": sum(sign * e.loss_plus for e in estimates) / len(estimates),
                    f"{name}_minus": sum(sign * e.loss_minus for e in estimates) / len(estimates),
                    "projected_grad": sum(e.projected_grad for e in estimates) / len(estimates),
                    "learning_rate": lr,
                    "eps": config.eps,
                    "epoch": step * t.batch_size / len(records),
                    "elapsed_s": round(time.perf_counter() - started, 3),
                }
            )
            progress.update(1)
            progress.set_postfix({name: f"{value:.4f}"})
            if (
                evaluate is not None
                and t.eval_steps
                and (step % t.eval_steps == 0 or step == t.max_steps)
            ):
                run.metrics.append({"step": step, "kind": "eval", **evaluate()})
            if step % t.save_steps == 0 or step == t.max_steps:
                save_checkpoint(run, step, named, t.keep_checkpoints)
    finally:
        progress.close()
        for close in closers:
            close()
    result = _save_result(run, model, policy, config, dumped)
    rows = run.metrics.rows()
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    run.write_summary(
        {
            "stage": "zo",
            "result": result.name,
            "adapter_sha256": adapter_sha256(result),
            "steps": t.max_steps,
            "resumed_from_step": start,
            "wall_s_last_session": round(time.perf_counter() - started, 1),
            "trained_parameters": mezo.numel,
            f"{name}_first": train[0][name] if train else None,
            f"{name}_last": train[-1][name] if train else None,
            **({"eval_first": evals[0], "eval_last": evals[-1]} if evals else {}),
        }
    )
    return result


def _evaluator(
    config: ZOConfig,
    model: Any,
    policy: Policy,
    eval_records: Sequence[Record] | None,
    pad_id: int,
    device: Any,
    closers: list[Callable[[], None]],
) -> Callable[[], dict[str, float]] | None:
    """Held-out loss (loss objective) or mean reward at a fixed sampling seed (reward)."""
    if eval_records is None:
        return None
    t = config.train
    if config.zo.objective == "loss":
        examples = tokenize_records(eval_records, policy.tokenizer, t.max_length)
        return lambda: {"eval_loss": mean_loss(model, examples, pad_id, t.eval_batch_size, device)}
    objective, close = reward_objective(model, policy.tokenizer, eval_records, config)
    closers.append(close)
    every = list(range(len(eval_records)))
    return lambda: {"eval_reward": -objective(every, 0)}


def _save_result(
    run: TrainingRun, model: Any, policy: Policy, config: ZOConfig, dumped: dict[str, Any]
) -> Path:
    final = run.adapter_dir if config.zo.params == "lora" else run.model_dir
    staged = run.path / (final.name + ".tmp")
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(str(staged))
    if config.zo.params == "all":
        policy.tokenizer.save_pretrained(str(staged))
    run.finish_result(staged, final, dumped)
    return final
