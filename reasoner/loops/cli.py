"""`reasoner iterate --config configs/expert-iteration-gsm8k.yaml [--set key=value ...]`."""

from __future__ import annotations

import argparse

from reasoner.config import add_config_options


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "iterate",
        help="expert iteration / iterative DPO: sample, verify, train, serve, evaluate (resumable)",
        description="Re-run the same command to resume a killed loop where it stopped.",
    )
    add_config_options(p, "IterateConfig", "rounds=3 or train.train.max_steps=20")
    p.add_argument("--out", help="the loop's folder; an existing one is resumed")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reasoner.config import flag_overrides, load_config
    from reasoner.loops.config import IterateConfig
    from reasoner.loops.iterate import default_out, run_iterate
    from reasoner.loops.report import rounds_table

    overrides = flag_overrides([("out", args.out)]) + args.set
    config = load_config(IterateConfig, args.config, overrides)
    if config.out is None:
        config = config.model_copy(update={"out": default_out(config)})
    run_iterate(config)
    print(rounds_table(Path(str(config.out))))
    return 0
