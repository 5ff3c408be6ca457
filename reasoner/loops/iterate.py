"""`reasoner iterate`: expert iteration and iterative DPO as one resumable command.

Each round: sample the training problems with the current policy (harder problems get more
samples), verify, build the round's data set, train an adapter, serve it from the same running
engine, and evaluate it on held-out problems. Round 0 is the base model's held-out eval.

Every step leaves a file that marks it done, and each step's own machinery resumes a step cut
short (`reasoner eval`'s results.jsonl, the trainer's checkpoints), so a killed loop picks up
at the step it was in and keeps everything it had finished:

    OUT/config.yaml, manifest.json
    OUT/rounds/<r>/samples/        eval run folder: the round's samples and verdicts
    OUT/rounds/<r>/samples-hard/   extra samples for the problems the policy fails (hard_n)
    OUT/rounds/<r>/samples-dart-<j>-n<n>/  DART-Math batched rounds (uniform / prop2diff)
    OUT/rounds/<r>/sampling-plan.json, correct-by-difficulty.png   per-problem quota and its plot
    OUT/rounds/<r>/train-spec.json, train-result.json   the training child's input and result
    OUT/rounds/<r>/data.jsonl      the round's training records (written atomically)
    OUT/rounds/<r>/train/          the training run folder; its adapter is what is served
    OUT/rounds/<r>/eval/           held-out eval run folder with the new adapter
    OUT/rounds/<r>/round.json      the round's summary: written last, marks the round done
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reasoner.config import EvalConfig, build_config
from reasoner.errors import ConfigError
from reasoner.loops import sampling_plan
from reasoner.loops.config import IterateConfig, ProblemSlice
from reasoner.loops.train_child import memory_report, train_in_child
from reasoner.models import Generator, engine_logs, load_generator
from reasoner.runner.evaluate import plan_eval, run_eval, selected_problems
from reasoner.runner.heldout import HeldoutOverlapWarning, require_disjoint
from reasoner.runner.manifest import folder_sha256, git_commit, hardware, package_versions
from reasoner.runner.run_folder import RunFolder
from reasoner.runs import read_results, write_text_atomic
from reasoner.training import build_records, train_stage
from reasoner.training.config import STAGE_CONFIGS, StageConfig


def round_dir(out: Path, index: int) -> Path:
    return out / "rounds" / str(index)


def _eval_config(
    config: IterateConfig,
    problems: ProblemSlice,
    strategy: dict[str, Any],
    sampling: dict[str, Any],
    out: Path,
    seed: int,
    adapter: str | None,
    ids: list[str] | None = None,
) -> EvalConfig:
    return build_config(
        EvalConfig,
        {
            "benchmark": problems.benchmark,
            "split": problems.split,
            "dataset": problems.dataset.model_dump() if problems.dataset else None,
            "data_dir": problems.data_dir,
            "limit": problems.limit,
            "ids": ids,
            "verifier": config.verifier,
            "model": {**config.model.model_dump(), "adapter": adapter},
            "strategy": strategy,
            "sampling": sampling,
            "seed": seed,
            "out": str(out),
            "progress": config.progress,
        },
        source=f"{out}: derived eval config",
    )


def _hard_ids(samples: Path, threshold: float) -> list[str]:
    """Problems whose share of correct samples is at most `threshold`, in file order."""
    ids = []
    for row in read_results(samples, missing_ok=True):
        verdicts = [v for step in row["steps"] for v in step["verdicts"]]
        correct = sum(v["status"] == "correct" for v in verdicts)
        if verdicts and correct / len(verdicts) <= threshold:
            ids.append(row["problem"]["id"])
    return ids


def _sample_round(
    config: IterateConfig, out: Path, index: int, adapter: str | None, generator: Generator
) -> list[Path]:
    """The round's sample folders: every training problem, then the hard ones again."""
    folder = round_dir(out, index)
    stage = config.sample
    strategy = stage.strategy.model_dump()
    sampling = stage.sampling.model_dump()
    # a round's seed differs from the last round's so a re-sampled problem gets new samples
    seed = config.seed * 1000 + index
    samples = folder / "samples"
    run_eval(
        _eval_config(config, config.train_problems, strategy, sampling, samples, seed, adapter),
        generator=generator,
    )
    folders = [samples]
    if stage.method != "hard_n":
        extra = config.train_problems.model_copy(update={"limit": None})

        def run_batch(name: str, ids: list[str], n: int, batch: int) -> Path:
            run_eval(
                _eval_config(
                    config,
                    extra,
                    {**strategy, "n": n},
                    sampling,
                    folder / name,
                    seed + 1000 * batch,
                    adapter,
                    ids=ids,
                ),
                generator=generator,
            )
            return folder / name

        dart = sampling_plan.sample_to_quota(
            stage.method,
            samples,
            stage.k,
            stage.max_samples,
            stage.round_n or stage.strategy.n,
            run_batch,
        )
        folders += dart[0]
        sampling_plan.write_plan(folder / sampling_plan.PLAN_FILE, stage.method, dart[1], stage)
        return folders
    if stage.hard_n > 0:
        hard = _hard_ids(samples, stage.hard_threshold)
        if hard:
            hard_folder = folder / "samples-hard"
            hard_eval = _eval_config(
                config,
                config.train_problems.model_copy(update={"limit": None}),
                {**strategy, "n": stage.hard_n},
                sampling,
                hard_folder,
                seed + 500,
                adapter,
                ids=hard,
            )
            run_eval(hard_eval, generator=generator)
            folders.append(hard_folder)
    plan = sampling_plan.describe(folders)
    sampling_plan.write_plan(folder / sampling_plan.PLAN_FILE, "hard_n", plan, stage)
    return folders


def _data_round(config: IterateConfig, out: Path, index: int, sample_folders: list[Path]) -> Path:
    data = round_dir(out, index) / "data.jsonl"
    if data.is_file():
        return data
    runs = list(sample_folders)
    merged = [index]
    if config.data == "accumulate":
        merged = list(range(1, index + 1))
        earlier = [
            path
            for r in range(1, index)
            for path in sampling_plan.sample_folders(round_dir(out, r))
        ]
        runs = earlier + runs
    # DART methods: a problem's records are capped by its targets, not by max_per_problem
    caps = sampling_plan.record_caps([round_dir(out, r) for r in merged])
    records = build_records(
        "dpo" if config.stage == "dpo" else "sft",
        runs,
        max_per_problem=None if caps else config.max_per_problem,
        seed=config.seed + index,
    )
    if caps:
        records = sampling_plan.cap_per_problem(records, caps)
    if not records:
        raise ConfigError(
            f"round {index}: no training records from {len(runs)} sample folder(s) (no verified "
            f"{'correct/incorrect pairs' if config.stage == 'dpo' else 'correct solutions'}); "
            "sample more (sample.strategy.n, sample.hard_n) or use easier training problems"
        )
    write_text_atomic(data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return data


ROUND_KEYS = ("data", "out", "stage")


def stage_config(config: IterateConfig, data: Path, previous: str | None, out: Path) -> StageConfig:
    """The training stage's config for one round: `train:` plus what the round decides."""
    clash = [key for key in ROUND_KEYS if key in config.train]
    if clash:
        raise ConfigError(
            f"train.{clash[0]}: set by each round of the loop, not in the train section"
        )
    model = dict(config.train.get("model", {}))
    model.update(name=config.model.name, adapter=previous if config.init == "last" else None)
    base = {
        **config.train,
        "model": model,
        "data": {"file": str(data)},
        "out": str(out),
        "progress": config.progress,
    }
    return build_config(STAGE_CONFIGS[config.stage], base, source="iterate config, train section")


def _train_round(
    config: IterateConfig, out: Path, index: int, data: Path, previous: str | None
) -> tuple[str, float | None]:
    """The round's adapter, and the training child's peak RSS in MiB (None: trained inline)."""
    staged = stage_config(config, data, previous, round_dir(out, index) / "train")
    if config.train_process == "inline":
        return str(train_stage(staged)), None
    return train_in_child(config.stage, staged.model_dump(mode="json"), round_dir(out, index))


def _round_summary(
    index: int,
    sample_folders: list[Path],
    data: Path | None,
    adapter: str | None,
    eval_dir: Path,
    train_peak_rss_mib: float | None = None,
) -> dict[str, Any]:
    evaluation = json.loads((eval_dir / "summary.json").read_text())
    sampled = [json.loads((f / "summary.json").read_text()) for f in sample_folders]
    return {
        "round": index,
        "finished": datetime.now(UTC).isoformat(),
        "adapter": adapter,
        "adapter_sha256": folder_sha256(adapter) if adapter else None,
        "heldout": {
            "accuracy": evaluation["accuracy"],
            "accuracy_ci95": evaluation["accuracy_ci95"],
            "correct": evaluation["correct"],
            "scored": evaluation["scored"],
            "compute_tokens": evaluation["compute"]["total"],
        },
        "train_samples": {
            "problems": sampled[0]["problems"] if sampled else 0,
            "samples": sum(s["problems"] * s.get("samples_per_problem", 1) for s in sampled),
            "pass_rate": sampled[0].get("pass@k", {}).get("1", sampled[0]["accuracy"])
            if sampled
            else None,
            "compute_tokens": sum(s["compute"]["total"] for s in sampled),
        },
        "dataset_records": (
            sum(1 for line in data.read_text().splitlines() if line.strip()) if data else 0
        ),
        "memory": memory_report(train_peak_rss_mib),
        "sampling": sampling_plan.round_summary(eval_dir.parent),
    }


def default_out(config: IterateConfig) -> str:
    return f"runs/iterate-{config.stage}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def run_iterate(config: IterateConfig, generator: Generator | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the loop; returns the summaries of rounds 0..R. The loop's folder is
    held (`RunFolder.held`) for the whole run, so a second loop on it is refused."""
    if config.stage == "dpo" and config.sample.strategy.n < 2 and config.sample.hard_n < 2:
        raise ConfigError("iterative DPO needs pairs: sample.strategy.n must be at least 2")
    out = Path(config.out or default_out(config))
    top = RunFolder(out)
    top.check(config.model_dump(mode="json"))
    with top.held():
        return _run_loop(config, out, top, generator)


def _run_loop(
    config: IterateConfig, out: Path, top: RunFolder, generator: Generator | None
) -> list[dict[str, Any]]:
    top.prepare(config.model_dump(mode="json"))
    # fail on a bad benchmark, strategy or training key before any model is loaded
    stage_config(config, out / "data.jsonl", None, out / "train")
    train_plan, heldout_plan = (
        plan_eval(
            _eval_config(config, problems, config.sample.strategy.model_dump(), {}, out, 0, None)
        )
        for problems in (config.train_problems, config.heldout)
    )
    require_disjoint(
        (p.question for p in selected_problems(train_plan)),
        (p.question for p in selected_problems(heldout_plan)),
        "train_problems",
        "heldout",
    )
    if not top.manifest_path.is_file():
        top.write_manifest(
            {
                "created": datetime.now(UTC).isoformat(),
                "reasoner_commit": git_commit(),
                "packages": package_versions(),
                "hardware": hardware(),
                "seed": config.seed,
            }
        )
    owns_generator = generator is None
    if generator is None:
        with engine_logs.logging_to(out / "engine.log"):
            generator, _ = load_generator(config.model.with_adapter_support(later=True))
    summaries = []
    try:
        adapter: str | None = None
        for index in range(config.rounds + 1):
            marker = round_dir(out, index) / "round.json"
            if marker.is_file():
                summary = json.loads(marker.read_text())
                summaries.append(summary)
                adapter = summary["adapter"]
                continue
            round_dir(out, index).mkdir(parents=True, exist_ok=True)
            sample_folders: list[Path] = []
            data: Path | None = None
            train_rss: float | None = None
            if index > 0:
                with warnings.catch_warnings():
                    # sampling the training problems with the adapter trained on them is the
                    # loop's job, not a leak (the overlap is still in each sample summary)
                    warnings.simplefilter("ignore", HeldoutOverlapWarning)
                    sample_folders = _sample_round(config, out, index, adapter, generator)
                data = _data_round(config, out, index, sample_folders)
                adapter, train_rss = _train_round(config, out, index, data, adapter)
            eval_dir = round_dir(out, index) / "eval"
            run_eval(
                _eval_config(
                    config,
                    config.heldout,
                    config.eval.strategy.model_dump(),
                    config.eval.sampling.model_dump(),
                    eval_dir,
                    config.seed,
                    adapter,
                ),
                generator=generator,
            )
            summary = _round_summary(index, sample_folders, data, adapter, eval_dir, train_rss)
            write_text_atomic(marker, json.dumps(summary, indent=2) + "\n")
            summaries.append(summary)
    finally:
        if owns_generator:
            generator.close()
    write_text_atomic(out / "summary.json", json.dumps({"rounds": summaries}, indent=2) + "\n")
    return summaries
