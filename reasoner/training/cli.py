"""`reasoner train sft|dpo|zo --config X --set key=value`: one stage, into a resumable run folder.

Wired into `reasoner` by `add_parser(sub)` and `run(args)`; `python -m reasoner.training.cli
train ...` runs it on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reasoner.config import add_config_options, flag_overrides
from reasoner.errors import ReasonerError
from reasoner.training.config import STAGE_CONFIGS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a LoRA adapter: sft, dpo, zo (zeroth-order) or reward (outcome reward "
        "model); resumable",
        description="A YAML config (--config) and dotted overrides (--set) feed one typed "
        "config; re-running with the same --out resumes from the last checkpoint.",
    )
    p.add_argument("stage", choices=STAGE_CONFIGS.names())
    add_config_options(p, "stage config", "train.max_steps=20 or data.runs=[runs/a]")
    p.add_argument("--model", help="base model: embedded alias, local folder or hub id")
    p.add_argument("--out", help="training run folder; an existing one is resumed")
    p.add_argument("--no-progress", action="store_true")


def overrides(args: argparse.Namespace) -> list[str]:
    pairs: list[tuple[str, Any]] = [("model.name", args.model), ("out", args.out)]
    if args.no_progress:
        pairs.append(("progress", False))
    return flag_overrides(pairs) + list(args.set)


def run(args: argparse.Namespace) -> int:
    from reasoner.config import config_file
    from reasoner.training import load_stage_config, train_stage

    path = str(config_file(args.config)) if args.config else None
    config = load_stage_config(args.stage, path, overrides(args))
    result = train_stage(config)
    summary_file = result.parent / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    keys = [
        k for k in summary if k.endswith(("_first", "_last")) and not isinstance(summary[k], dict)
    ]
    print(f"{args.stage}: {result}")
    if keys:
        print("  " + "  ".join(f"{k} {summary[k]:.4g}" for k in keys if summary[k] is not None))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasoner")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ReasonerError as exc:
        print(f"reasoner: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
