"""`reasoner iterate --config configs/expert-iteration-gsm8k.yaml [--set key=value ...]`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "iterate",
        help="expert iteration / iterative DPO: sample, verify, train, serve, evaluate (resumable)",
        description="Re-run the same command to resume a killed loop where it stopped.",
    )
    p.add_argument("--config", help="a YAML IterateConfig (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. rounds=3 or train.train.max_steps=20 (repeatable)",
    )
    p.add_argument("--out", help="the loop's folder; an existing one is resumed")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reasoner.config import build_config, config_file, load_yaml
    from reasoner.loops.config import IterateConfig
    from reasoner.loops.iterate import default_out, run_iterate
    from reasoner.loops.report import rounds_table

    path = str(config_file(args.config)) if args.config else None
    base = load_yaml(path) if path else {}
    overrides = list(args.set) + ([f"out={args.out}"] if args.out else [])
    config = build_config(IterateConfig, base, overrides, source=path or "command line")
    if config.out is None:
        config = config.model_copy(update={"out": default_out(config)})
    run_iterate(config)
    print(rounds_table(Path(str(config.out))))
    return 0
