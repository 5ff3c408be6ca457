"""Per-round tables and plots of `reasoner iterate` folders, for `reasoner report`.

Read from the round.json files alone, so a loop still running (or killed) reports the rounds
it has finished.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from reasoner.errors import ReasonerError

HELDOUT_KEYS = ("accuracy", "accuracy_ci95", "correct", "scored")


def is_iterate_folder(path: Path) -> bool:
    return (path / "rounds").is_dir() and (path / "config.yaml").is_file()


def load_rounds(path: Path) -> list[dict[str, Any]]:
    """Each round's record; its held-out figures are read again from the round's eval summary,
    which `reasoner rescore` may have updated since the round finished."""
    rounds = []
    for marker in sorted((path / "rounds").glob("*/round.json"), key=lambda p: int(p.parent.name)):
        try:
            record = json.loads(marker.read_text())
            summary = marker.parent / "eval" / "summary.json"
            if summary.is_file() and "heldout" in record:
                current = json.loads(summary.read_text())
                record["heldout"].update({k: current[k] for k in HELDOUT_KEYS if k in current})
        except json.JSONDecodeError as exc:
            raise ReasonerError(f"{marker} or its eval summary: not valid JSON ({exc})") from None
        rounds.append(record)
    return rounds


def loop_label(path: Path) -> str:
    config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    stage = config.get("stage", "?")
    name = {"sft": "expert iteration", "dpo": "iterative DPO", "zo": "zeroth-order iteration"}
    return f"{name.get(stage, stage)} ({path.name})"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def rounds_table(path: Path) -> str:
    headers = [
        "round",
        "held-out accuracy (95% CI)",
        "correct",
        "train pass rate",
        "records",
        "tokens sampling",
        "tokens eval",
    ]
    lines = [
        f"### {loop_label(path)}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for r in load_rounds(path):
        held = r["heldout"]
        low, high = held["accuracy_ci95"]
        train = r["train_samples"]
        cells = [
            str(r["round"]) + (" (base)" if r["round"] == 0 else ""),
            f"{_pct(held['accuracy'])} ({_pct(low)}-{_pct(high)})",
            f"{held['correct']}/{held['scored']}",
            _pct(train["pass_rate"]) if r["round"] else "-",
            str(r["dataset_records"]) if r["round"] else "-",
            str(train["compute_tokens"]) if r["round"] else "-",
            str(held["compute_tokens"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_rounds(paths: Sequence[Path], out: Path) -> Path:
    """Held-out accuracy per round with 95% intervals, one line per loop; records per round
    as bars beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (acc_axis, data_axis) = plt.subplots(
        2, 1, figsize=(6.4, 5.6), sharex=True, height_ratios=[3, 1.4]
    )
    width = 0.8 / max(len(paths), 1)
    for position, path in enumerate(paths):
        rounds = load_rounds(path)
        xs = [r["round"] for r in rounds]
        ys = [r["heldout"]["accuracy"] or 0.0 for r in rounds]
        lows = [y - r["heldout"]["accuracy_ci95"][0] for y, r in zip(ys, rounds, strict=True)]
        highs = [r["heldout"]["accuracy_ci95"][1] - y for y, r in zip(ys, rounds, strict=True)]
        label = loop_label(path)
        acc_axis.errorbar(xs, ys, yerr=[lows, highs], marker="o", capsize=4, label=label)
        offset = (position - (len(paths) - 1) / 2) * width
        data_axis.bar(
            [x + offset for x in xs[1:]],
            [r["dataset_records"] for r in rounds[1:]],
            width=width,
            label=label,
        )
    acc_axis.set_ylabel("held-out accuracy")
    acc_axis.set_ylim(bottom=0)
    acc_axis.legend(fontsize="small")
    acc_axis.grid(alpha=0.3)
    data_axis.set_ylabel("training records")
    data_axis.set_xlabel("round (0 = base model)")
    data_axis.xaxis.get_major_locator().set_params(integer=True)  # rounds are whole numbers
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def correct_by_difficulty(
    plan: dict[str, Any], bins: int = 10
) -> list[tuple[float, int, float, float | None]]:
    """Per difficulty bin of width 1/bins: (bin start, problems, mean correct responses, mean
    target or None), from a round's sampling-plan.json; empty bins are left out."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for entry in plan["per_problem"]:
        grouped.setdefault(min(int(entry["difficulty"] * bins), bins - 1), []).append(entry)
    rows = []
    for index in sorted(grouped):
        entries = grouped[index]
        targets = [e["target"] for e in entries if e["target"] is not None]
        rows.append(
            (
                index / bins,
                len(entries),
                sum(e["correct"] for e in entries) / len(entries),
                sum(targets) / len(targets) if targets else None,
            )
        )
    return rows


def plot_correct_by_difficulty(plan: dict[str, Any], out: Path, bins: int = 10) -> Path:
    """A round's correct responses per problem against difficulty (fail rate of the first
    samples): mean per difficulty bin as bars, the mean target as markers (uniform /
    prop2diff), and the number of problems per bin beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = correct_by_difficulty(plan, bins)
    width = 1 / bins
    centres = [start + width / 2 for start, *_ in rows]
    figure, (correct_axis, count_axis) = plt.subplots(
        2, 1, figsize=(6.4, 5.2), sharex=True, height_ratios=[3, 1.2]
    )
    correct_axis.bar(centres, [r[2] for r in rows], width=width * 0.9, label="correct responses")
    targeted = [(c, r[3]) for c, r in zip(centres, rows, strict=True) if r[3] is not None]
    if targeted:
        correct_axis.plot(*zip(*targeted, strict=True), "k_", markersize=18, label="target")
    correct_axis.set_ylabel("correct responses per problem (mean)")
    correct_axis.set_title(f"sampling: {plan['method']}", fontsize="medium")
    correct_axis.legend(fontsize="small")
    correct_axis.grid(alpha=0.3)
    count_axis.bar(centres, [r[1] for r in rows], width=width * 0.9, color="grey")
    count_axis.set_ylabel("problems")
    count_axis.set_xlabel("difficulty (1 - pass rate of the first samples)")
    count_axis.set_xlim(0, 1)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
