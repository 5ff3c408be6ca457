"""`reasoner compare`: several strategy configs on one benchmark, one engine, matched budgets.

Every config gets the same benchmark, slice, model and per-problem budget (the command line's
settings override each file's), runs into its own resumable run folder under OUT, and the
report puts accuracy (with intervals) against compute for all of them. One engine serves every
run, so the comparison pays one model load and the runs differ only in strategy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reasoner.config import EvalConfig, build_config, config_file, flag_overrides, load_yaml
from reasoner.errors import ConfigError
from reasoner.models import Generator, engine_logs, load_generator
from reasoner.runner.evaluate import plan_eval, run_eval
from reasoner.runner.report import ReportFiles, write_report

SHARED_KEYS = ("benchmark", "split", "dataset", "data_dir", "limit", "ids", "model")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="several strategy configs on one benchmark at matched budgets: table and plots",
        description="Each CONFIG is an eval YAML (a path, or a name in configs/); the flags "
        "below override all of them alike. Re-run the same command to resume.",
    )
    p.add_argument("configs", nargs="+", metavar="CONFIG")
    p.add_argument("--out", required=True, help="folder for the runs and the report")
    p.add_argument("--benchmark")
    p.add_argument("--limit", type=int)
    p.add_argument("--model")
    p.add_argument("--budget-tokens", type=int, help="per problem, for every strategy")
    p.add_argument("--budget-calls", type=int, help="per problem, for every strategy")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="for every config"
    )


def build_configs(
    names: list[str], overrides: list[str], out: Path
) -> list[tuple[str, EvalConfig]]:
    configs: list[tuple[str, EvalConfig]] = []
    for name in names:
        path = config_file(name)
        label = path.stem
        if any(label == seen for seen, _ in configs):
            raise ConfigError(f"{path}: two configs named {label!r}; rename one")
        config = build_config(
            EvalConfig,
            load_yaml(path),
            [*overrides, f"out={json.dumps(str(out / label))}"],
            source=str(path),
        )
        configs.append((label, config))
    first_label, first = configs[0]
    for label, config in configs[1:]:
        for key in SHARED_KEYS:
            if getattr(config, key) != getattr(first, key):
                raise ConfigError(
                    f"{label}: {key} differs from {first_label}'s; a comparison runs every "
                    f"strategy on the same problems and model (set it with a flag or --set)"
                )
    return configs


def run_compare(
    names: list[str], overrides: list[str], out: Path, generator: Generator | None = None
) -> ReportFiles:
    """`generator` lets a caller share an engine it already holds."""
    configs = build_configs(names, overrides, out)
    for _, config in configs:  # every config is checked before the model loads
        plan_eval(config)
    owns_generator = generator is None
    if generator is None:
        out.mkdir(parents=True, exist_ok=True)
        with engine_logs.logging_to(out / "engine.log"):
            generator, _ = load_generator(configs[0][1].model)
    try:
        for _, config in configs:
            run_eval(config, generator=generator)
    finally:
        if owns_generator:
            generator.close()
    return write_report([out / label for label, _ in configs], out / "report")


def run(args: argparse.Namespace) -> int:
    pairs = [
        ("benchmark", args.benchmark),
        ("limit", args.limit),
        ("model.name", args.model),
        ("strategy.budget_tokens", args.budget_tokens),
        ("strategy.budget_calls", args.budget_calls),
    ]
    overrides = flag_overrides(pairs) + list(args.set)
    files = run_compare(args.configs, overrides, Path(args.out))
    print(files.markdown.read_text())
    print(f"wrote {files.markdown}, {files.csv}, {len(files.plots)} plots")
    return 0
