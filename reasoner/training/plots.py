"""Loss / reward / preference-margin curves of a training run folder, as one PNG.

Drawn on a matplotlib Figure directly (the Agg canvas), like `reasoner report`'s plots: no
pyplot state, no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reasoner.errors import ReasonerError
from reasoner.training.run_folder import read_metrics

# (panel title, train key, eval key); a panel is drawn when either key has values
PANELS = (
    ("loss", "loss", "eval_loss"),
    ("reward (mean verifier score)", "reward", "eval_reward"),
    (
        "preference margin (beta * log-ratio, chosen - rejected)",
        "rewards/margins",
        "eval_rewards/margins",
    ),
    ("preference accuracy", "rewards/accuracies", "eval_rewards/accuracies"),
)


def is_training_run(folder: str | Path) -> bool:
    """A training run folder (`reasoner train`), as opposed to an eval run folder."""
    folder = Path(folder)
    config = folder / "config.yaml"
    if not (folder / "metrics.jsonl").is_file() or not config.is_file():
        return False
    data = yaml.safe_load(config.read_text()) or {}
    return isinstance(data, dict) and data.get("stage") in ("sft", "dpo", "zo")


def _series(rows: list[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    points = [(int(r["step"]), float(r[key])) for r in rows if r.get("kind") == kind and key in r]
    return [s for s, _ in points], [v for _, v in points]


def plot_training(run_folder: str | Path, out_png: str | Path) -> Path:
    folder, out = Path(run_folder), Path(out_png)
    rows = read_metrics(folder / "metrics.jsonl")
    if not rows:
        raise ReasonerError(f"{folder}: no metrics.jsonl rows to plot (not a training run?)")
    config = (
        yaml.safe_load((folder / "config.yaml").read_text())
        if (folder / "config.yaml").is_file()
        else {}
    )
    panels = [
        (title, _series(rows, "train", train_key), _series(rows, "eval", eval_key))
        for title, train_key, eval_key in PANELS
        if any(train_key in r or eval_key in r for r in rows)
    ]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0 * len(panels), 3.6), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, (train_x, train_y), (eval_x, eval_y)) in zip(axes, panels, strict=True):
        if train_x:
            ax.plot(
                train_x,
                train_y,
                color="tab:blue",
                alpha=0.35,
                linewidth=1,
                label="train (per step)",
            )
            if len(train_y) >= 5:
                width = max(3, len(train_y) // 10)
                smooth = [
                    sum(train_y[max(0, i - width + 1) : i + 1])
                    / len(train_y[max(0, i - width + 1) : i + 1])
                    for i in range(len(train_y))
                ]
                ax.plot(
                    train_x, smooth, color="tab:blue", linewidth=2, label=f"train (mean of {width})"
                )
        if eval_x:
            ax.plot(eval_x, eval_y, "o-", color="tab:orange", linewidth=2, label="held-out")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    model = (config.get("model") or {}).get("name", "")
    fig.suptitle(f"{config.get('stage', 'training')}: {model}  ({folder.name})", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def training_section(run_folders: list[Path], out: Path) -> tuple[str, list[Path]]:
    """A Markdown section (one row per training run: stage, steps, first/last loss or reward,
    held-out first/last) and one PNG per run, for `reasoner report`."""
    import json

    lines = [
        "## Training runs\n",
        "| run | stage | steps | train first -> last | held-out first -> last |",
        "|---|---|---|---|---|",
    ]
    plots = []
    for folder in run_folders:
        rows = read_metrics(folder / "metrics.jsonl")
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        summary_file = folder / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        cells = []
        for kind, keys in (("train", ("loss", "reward")), ("eval", ("eval_loss", "eval_reward"))):
            series = next(
                (_series(rows, kind, k) for k in keys if _series(rows, kind, k)[1]), ([], [])
            )
            values = series[1]
            cells.append(f"{values[0]:.4f} -> {values[-1]:.4f}" if values else "")
        steps = max((r["step"] for r in rows if r.get("kind") == "train"), default=0)
        stage = str(config.get("stage", "?")) + ("" if summary else " (unfinished)")
        lines.append(f"| `{folder}` | {stage} | {steps} | {cells[0]} | {cells[1]} |")
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in folder.name)
        plots.append(plot_training(folder, out / f"training_{slug}.png"))
    return "\n".join(lines) + "\n", plots
