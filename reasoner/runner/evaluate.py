"""`reasoner eval`: a benchmark, a strategy and a model, into a resumable run folder."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reasoner.config import EvalConfig, ScorerSettings
from reasoner.errors import ConfigError, unknown_choice
from reasoner.models import Generator, engine_logs, load_generator, resolve_backend, resolve_model
from reasoner.models.adapter import AdapterGenerator
from reasoner.prompts import PromptTemplate, load_prompt
from reasoner.runner.benchmarks import BenchmarkSpec, load_benchmark
from reasoner.runner.datasets import (
    FieldMap,
    LoadedDataset,
    load_dataset,
    load_manifest,
    read_jsonl,
)
from reasoner.runner.heldout import warn_if_trained_on
from reasoner.runner.manifest import (
    folder_sha256,
    git_commit,
    hardware,
    model_record,
    package_versions,
)
from reasoner.runner.metrics import summarize
from reasoner.runner.run_folder import RunFolder
from reasoner.runner.shard import concatenate_jsonl, merge_configs, select_shard
from reasoner.runs import read_results
from reasoner.strategies import Budget, Strategy, StrategyConfig, load_strategy
from reasoner.strategies.base import oracle_refusal
from reasoner.types import (
    Completion,
    GenerationRequest,
    Problem,
    SamplingParams,
    Step,
    Trace,
    Usage,
    Verdict,
)
from reasoner.verifiers import VERIFIERS, Verifier
from reasoner.verifiers import load as load_verifier

ENV_PREFIXES = ("VLLM_", "OMP_", "CUDA_VISIBLE_DEVICES", "REASONER_")


@dataclass
class EvalPlan:
    """Everything resolved before a model is loaded, so bad input fails in seconds."""

    config: EvalConfig  # with benchmark defaults filled in
    benchmark: BenchmarkSpec
    dataset: LoadedDataset
    prompt: PromptTemplate
    strategy: Strategy
    verifier: Verifier
    sampling: SamplingParams
    strategy_config: StrategyConfig  # without its scorer, which may need the loaded engine
    #: benchmark questions the adapter's recorded training data holds (0: none, or no record)
    adapter_overlap: int = 0


def plan_eval(config: EvalConfig) -> EvalPlan:
    benchmark = load_benchmark(config.benchmark)
    strategy = load_strategy(config.strategy.name)
    verifier = load_verifier(
        config.verifier or benchmark.verifier, timeout_s=config.verifier_timeout_s
    )
    prompt = load_prompt(config.prompt or benchmark.prompt)
    resolve_backend(config.model)
    if config.dataset is not None:
        d = config.dataset
        fields = FieldMap(question=d.question_field, answer=d.answer_field, id=d.id_field)
        dataset = read_jsonl(Path(d.path), fields, [], d.answer_format, config.skip_bad)
    else:
        manifest = load_manifest(benchmark.dataset)
        dataset = load_dataset(
            manifest, config.split or benchmark.split, config.data_dir, config.skip_bad
        )
    sampling = SamplingParams(
        temperature=(
            config.sampling.temperature
            if config.sampling.temperature is not None
            else strategy.default_temperature
        ),
        top_p=config.sampling.top_p,
        max_tokens=config.sampling.max_tokens or benchmark.max_tokens,
        stop=tuple(config.sampling.stop),
    )
    settings = config.strategy
    strategy_config = StrategyConfig(
        prompt,
        sampling,
        settings.n,
        config.seed,
        options=settings.options,
        budget=Budget(settings.budget_tokens, settings.budget_calls),
        oracle=settings.oracle,
    )
    strategy.validate(strategy_config)
    if settings.scorer is not None and settings.scorer.name not in VERIFIERS:
        raise ConfigError(unknown_choice("strategy.scorer.name", settings.scorer.name, VERIFIERS))
    scorer_class = VERIFIERS[settings.scorer.name] if settings.scorer is not None else None
    if scorer_class is not None and scorer_class.reads_gold and not settings.oracle:
        raise ConfigError(oracle_refusal(f"strategy.scorer {scorer_class.name!r}", "a scorer"))
    if strategy.needs_scorer_for(strategy_config) and settings.scorer is None:
        raise ConfigError(
            f"strategy {strategy.name!r} ranks candidates and needs strategy.scorer "
            f"(e.g. strategy.scorer.name=judge); valid scorers: {', '.join(VERIFIERS.names())}"
        )
    resolved = config.model_copy(
        update={
            "split": None if config.dataset else (config.split or benchmark.split),
            "prompt": config.prompt or benchmark.prompt,
            "verifier": config.verifier or benchmark.verifier,
            "sampling": config.sampling.model_copy(
                update={"temperature": sampling.temperature, "max_tokens": sampling.max_tokens}
            ),
        }
    )
    plan = EvalPlan(
        resolved, benchmark, dataset, prompt, strategy, verifier, sampling, strategy_config
    )
    if config.model.adapter is not None:
        plan.adapter_overlap = warn_if_trained_on(
            config.model.adapter,
            (p.question for p in selected_problems(plan)),
            f"{resolved.benchmark}[{resolved.split}]"
            if config.dataset is None
            else config.dataset.path,
        ).count
    return plan


def build_scorer(settings: ScorerSettings | None, generator: Generator) -> Verifier | None:
    """The strategy's scorer; an LLM judge grades with the run's own engine."""
    if settings is None:
        return None
    options = dict(settings.options)
    if VERIFIERS[settings.name].needs_generator:
        options.setdefault("generator", generator)
    return load_verifier(settings.name, **options)


def run_eval(config: EvalConfig, generator: Generator | None = None) -> dict[str, Any]:
    """Run (or resume) an eval and return its summary. `generator` lets callers share one
    loaded engine across runs; otherwise the configured model is loaded here."""
    plan = plan_eval(config)
    config = plan.config
    problems = select_shard(selected_problems(plan), config.shard)
    out = Path(config.out or default_out(config))
    folder = RunFolder(out)
    try:
        return _run_in(folder, plan, problems, generator)
    finally:
        folder.unlock()


def _run_in(
    folder: RunFolder, plan: EvalPlan, problems: list[Problem], generator: Generator | None
) -> dict[str, Any]:
    """`run_eval` inside its folder; the caller releases the folder's lock however this ends."""
    config = plan.config
    resolved_config = config.model_dump(mode="json")
    folder.check(resolved_config)  # nothing is written to --out until the engine has started
    if folder.path.is_dir():  # before reading: a second writer must not touch a live run
        folder.lock()
    finished_ids = {row["problem"]["id"] for row in folder.load_results()}
    pending = [p for p in problems if p.id not in finished_ids]

    session: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "problems": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "engine_calls": 0,
    }
    if pending:
        started = time.perf_counter()
        owns_generator = generator is None
        engine_logs.log_engine_to(folder.path / "engine.log")
        if generator is None:
            if config.ray is not None:
                from reasoner.scale.replicas import load_ray_generator

                generator, resolved_model = load_ray_generator(config.model, config.ray)
            else:
                generator, resolved_model = load_generator(config.model)
        elif resolve_backend(config.model) != "openai":
            resolved_model = resolve_model(config.model.name)  # for the manifest's hashes
        else:
            resolved_model = None
        session["load_time_s"] = time.perf_counter() - started
        try:
            folder.lock()
            folder.prepare(resolved_config)
        except BaseException:
            if owns_generator:
                generator.close()
            raise
        # what another process finished in this folder while this one loaded its engine
        finished_ids = {row["problem"]["id"] for row in folder.load_results()}
        pending = [p for p in pending if p.id not in finished_ids]
        if config.model.adapter is not None:
            generator = AdapterGenerator(generator, config.model.adapter)
        # a start record first, so a session killed before it could finish still counts
        folder.append_session(
            {"event": "start", "started": session["started"], "pending": len(pending)}
        )
        if not folder.manifest_path.is_file():
            folder.write_manifest(_manifest(plan, generator, resolved_model))
        progress = tqdm(
            total=len(problems),
            initial=len(problems) - len(pending),
            unit="problem",
            desc=f"{config.benchmark}/{config.strategy.name}",
            disable=not config.progress,
        )

        def record(trace: Trace) -> None:
            folder.append_result(trace.to_dict())
            session["problems"] += 1
            session["prompt_tokens"] += trace.usage.prompt_tokens
            session["completion_tokens"] += trace.usage.completion_tokens
            progress.update(1)

        generation_started = time.perf_counter()
        scorer = build_scorer(config.strategy.scorer, generator)
        verifier = plan.verifier
        if config.ray is not None:  # checks run as Ray tasks across the cluster
            from reasoner.scale.verifiers import ray_verifier

            verifier = ray_verifier(plan.verifier, config.ray)
        try:
            fitting, oversized = split_oversized(plan, pending, generator)
            for trace in oversized:
                record(trace)
            session["engine_calls"] += 1
            plan.strategy.run(
                fitting,
                generator,
                verifier,
                dataclasses.replace(plan.strategy_config, scorer=scorer),
                on_trace=record,
            )
        finally:
            progress.close()
            session["generate_wall_s"] = time.perf_counter() - generation_started
            folder.append_session({"event": "end", **session})
            verifier.close()
            if scorer is not None:
                scorer.close()
            if owns_generator:
                generator.close()
            engine_logs.log_engine_to(None)  # later engines in this process are not this run's
    else:  # nothing left to run: the summary is rewritten from the results
        folder.lock()
        folder.prepare(resolved_config)
    summary = _summary(plan, problems, folder)
    folder.write_summary(summary)
    return summary


def split_oversized(
    plan: EvalPlan, problems: Sequence[Problem], generator: Generator
) -> tuple[list[Problem], list[Trace]]:
    """Problems whose prompt fits the model's context window, and an `error` trace for each
    that does not: one such problem must not abort the engine call of all the others."""
    fitting: list[Problem] = []
    oversized: list[Trace] = []
    n = plan.strategy_config.n
    for problem in problems:
        request = GenerationRequest(messages=plan.prompt.render(problem), sampling=plan.sampling)
        reason = generator.prompt_overflow(request)
        if reason is None:
            fitting.append(problem)
            continue
        verdict = Verdict("error", 0.0, reason, None, {"error": "context_length_exceeded"})
        completions = [Completion("", "error", 0, 0) for _ in range(n)]
        step = Step(request, completions, [verdict] * n)
        oversized.append(Trace(problem, [step], None, verdict, Usage(), clusters=[-1] * n))
    return fitting, oversized


def selected_problems(plan: EvalPlan) -> list[Problem]:
    """The run's problems before sharding: the first `limit` of the dataset."""
    problems = plan.dataset.problems
    if plan.config.ids is not None:
        wanted = set(plan.config.ids)
        problems = [p for p in problems if p.id in wanted]
        missing = wanted - {p.id for p in problems}
        if missing:
            raise ConfigError(
                f"ids: {len(missing)} id(s) not in {plan.dataset.source}, "
                f"e.g. {sorted(missing)[0]!r}"
            )
    return problems[: plan.config.limit] if plan.config.limit is not None else list(problems)


def merge_shards(folders: Sequence[Path], out: Path) -> dict[str, Any]:
    """One run folder from the shards of a run; its summary is computed from the merged rows
    exactly as an unsharded run's would be."""
    config = EvalConfig.model_validate({**merge_configs(folders), "out": str(out)})
    plan = plan_eval(config)
    merged = RunFolder(out)
    if merged.path.exists() and any(merged.path.iterdir()):
        raise ConfigError(f"{out} already exists and is not empty")
    with merged.held():
        merged.prepare(plan.config.model_dump(mode="json"))
        merged.write_results(row for f in folders for row in read_results(f, missing_ok=True))
        concatenate_jsonl([f / "sessions.jsonl" for f in folders], merged.sessions_path)
        manifests = [
            json.loads((f / "manifest.json").read_text())
            for f in folders
            if (f / "manifest.json").is_file()
        ]
        if manifests:
            merged.write_manifest(
                {**manifests[0], "shards": [str(f) for f in folders], "shard_manifests": manifests}
            )
        summary = _summary(plan, selected_problems(plan), merged)
        merged.write_summary(summary)
        return summary


def default_out(config: EvalConfig) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"runs/{config.benchmark}-{config.strategy.name}-{stamp}"


def _manifest(plan: EvalPlan, generator: Generator, resolved: Any) -> dict[str, Any]:
    config = plan.config
    return {
        "created": datetime.now(UTC).isoformat(),
        "reasoner_commit": git_commit(),
        "packages": package_versions(),
        "model": model_record(resolved, generator.description),
        # the weight dtype (`auto` resolved on this machine), why, and the CPU flags behind it
        "dtype": None if generator.dtype_choice is None else generator.dtype_choice.as_dict(),
        **(
            {"adapter": {"path": adapter, "folder_sha256": folder_sha256(adapter)}}
            if (adapter := config.model.adapter) is not None
            else {}
        ),
        "dataset": {
            "source": plan.dataset.source,
            "sha256": plan.dataset.sha256,
            "rows": len(plan.dataset.problems),
            "bad_rows": len(plan.dataset.bad_rows),
        },
        # the templates the model saw: the strategy's own where it has them
        "prompts": [
            {"name": p.name, "sha256": p.sha256}
            for p in plan.strategy.prompts(plan.strategy_config)
        ],
        "verifier": config.verifier,
        "strategy": config.strategy.name,
        "seed": config.seed,
        "hardware": hardware(),
        # the engine's thread binding and cache sizing, as the backend set them
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
    }


def _summary(plan: EvalPlan, problems: list[Any], folder: RunFolder) -> dict[str, Any]:
    order = {p.id: i for i, p in enumerate(problems)}
    rows = sorted(
        (row for row in folder.load_results() if row["problem"]["id"] in order),
        key=lambda row: order[row["problem"]["id"]],
    )
    config = plan.config
    summary: dict[str, Any] = {
        "benchmark": config.benchmark if config.dataset is None else f"file:{config.dataset.path}",
        "model": config.model.name,
        "strategy": config.strategy.name,
        "n": config.strategy.n,
        "seed": config.seed,
        "shard": config.shard,
        # scorers / feedback saw the gold: the accuracy measures search with the answer key
        "oracle": config.strategy.oracle,
        # problems the adapter was trained on (from its train_questions.sha256.txt)
        **({"adapter_train_overlap": plan.adapter_overlap} if config.model.adapter else {}),
        "complete": len(rows) == len(problems),
        "bad_rows_skipped": len(plan.dataset.bad_rows),
        **summarize(rows),
    }
    records = folder.load_sessions()
    sessions = [s for s in records if s.get("event") == "end"]
    started = sum(1 for s in records if s.get("event") == "start")
    generate_wall = sum(s.get("generate_wall_s", 0.0) for s in sessions)
    generated = sum(s.get("completion_tokens", 0) for s in sessions)
    summary["timing"] = {
        "sessions": started,
        "interrupted_sessions": started - len(sessions),
        "engine_calls": sum(s.get("engine_calls", 0) for s in sessions),
        "load_time_s": sum(s.get("load_time_s", 0.0) for s in sessions),
        "generate_wall_s": generate_wall,
        "completion_tokens_per_s": generated / generate_wall if generate_wall else None,
    }
    if plan.dataset.bad_rows:
        (folder.path / "bad_rows.txt").write_text("\n".join(plan.dataset.bad_rows) + "\n")
    return summary
