"""`reasoner report`: one or more run folders side by side, as a Markdown table, a CSV and plots.

Runs are named by what sets them apart (the keys where their configs differ), because folder
names are whatever the person typed at the time and rarely say which knob was turned.
Everything is read from the run folders alone; nothing in them is modified.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from reasoner.errors import ReasonerError, RunFolderError
from reasoner.runner.metrics import breakdown, category_key, compute_tokens
from reasoner.runs import read_results

# Keys that never change results; named in a label only when nothing else tells runs apart.
INCIDENTAL_KEYS = ("out", "progress")
# A smaller or larger slice of the same run: a difference, but a weaker one than a real setting.
SLICE_KEYS = ("limit",)
# A metadata key with more distinct values than this (ids, free text) is not a category.
MAX_CATEGORIES = 30


class ReportError(ReasonerError):
    """A run folder that cannot be reported: names the folder and the file."""


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    label: str = ""


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    csv: Path
    plots: list[Path] = field(default_factory=list)


# --- reading run folders ---------------------------------------------------------------------


def load_run(path: Path) -> Run:
    if not path.is_dir():
        raise ReportError(f"{path}: not a run folder (no such directory)")
    summary = _read_mapping(path / "summary.json")
    config = _read_mapping(path / "config.yaml")
    try:
        rows = read_results(path)
    except RunFolderError as exc:
        raise ReportError(str(exc)) from None
    return Run(path=path, config=config, summary=summary, rows=rows)


def _read_mapping(file: Path) -> dict[str, Any]:
    """A run folder's summary.json or config.yaml, which must hold a mapping; what is wrong
    with it is named."""
    text = _read_text(file)
    kind = "JSON" if file.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ReportError(f"{file}: not valid {kind} ({exc})") from exc
    if not isinstance(data, dict):
        expected = "a JSON object" if kind == "JSON" else "a mapping"
        raise ReportError(f"{file}: expected {expected}, got {type(data).__name__}")
    return data


def _read_text(file: Path) -> str:
    if not file.is_file():
        raise ReportError(f"{file.parent}: not a complete run folder ({file.name} is missing)")
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{file}: cannot be read ({exc})") from exc


# --- labels ----------------------------------------------------------------------------------

# Past this many differing keys a `key=value` label is longer than the folder name it replaces.
MAX_LABEL_KEYS = 3


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_labels(configs: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    """`key=value, ...` over the keys where the configs differ; the folder name where they do
    not or where too many keys differ to read (runs of different strategies), and appended
    where two runs would otherwise share a label."""
    flats = [flatten(c) for c in configs]
    keys = _differing_keys(flats, ignore=(*INCIDENTAL_KEYS, *SLICE_KEYS))
    if not keys:
        keys = _differing_keys(flats, ignore=INCIDENTAL_KEYS)
    if not keys or len(keys) > MAX_LABEL_KEYS or len(configs) < 2:
        return list(names)
    labels = [", ".join(f"{k}={_format_value(flat.get(k))}" for k in keys) for flat in flats]
    return [
        f"{label} ({name})" if labels.count(label) > 1 else label
        for label, name in zip(labels, names, strict=True)
    ]


def _differing_keys(flats: Sequence[dict[str, Any]], ignore: Sequence[str]) -> list[str]:
    seen = dict.fromkeys(k for flat in flats for k in flat if k not in ignore)  # config order
    keys = sorted(seen, key=_key_rank)
    return [k for k in keys if len({_format_value(flat.get(k)) for flat in flats}) > 1]


def _key_rank(key: str) -> int:
    """Strategy and sampling first: they are what a comparison is usually about."""
    for rank, prefix in enumerate(("strategy.", "sampling.", "model.")):
        if key.startswith(prefix):
            return rank
    return 3


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


# --- the table -------------------------------------------------------------------------------


def _get(data: dict[str, Any], *path: str) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def compute(run: Run) -> dict[str, float]:
    """From summary.json when it has it; derived from its token counts for runs summarised
    before compute was recorded."""
    if isinstance(run.summary.get("compute"), dict):
        return dict(run.summary["compute"])
    tokens = run.summary.get("tokens") or {}
    return compute_tokens(
        int(tokens.get("prompt", 0)),
        int(tokens.get("prompt_cached", 0)),
        int(tokens.get("completion", 0)),
        int(run.summary.get("problems", 0)),
    )


def top_k(run: Run, metric: str) -> tuple[int, float] | None:
    """maj@k / pass@k at the largest k that every scored problem reaches: the number a sampling
    strategy is judged by (a larger k averages over only the problems with that many
    candidates, see `at_k_problems`)."""
    values = run.summary.get(metric)
    if not isinstance(values, dict) or not values:
        return None
    counts = run.summary.get("at_k_problems") or {}
    everyone = counts.get("1")
    full = [k for k in values if counts.get(k, everyone) == everyone]
    k = max(full or values, key=int)
    return int(k), float(values[k])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the (compute, accuracy) points that no other point beats: none has at
    most the compute and at least the accuracy, better on one. Ordered by compute, so they
    trace the best accuracy each budget buys."""
    front = [
        i
        for i, (cost, acc) in enumerate(points)
        if not any(
            c <= cost and a >= acc and (c, a) != (cost, acc)
            for j, (c, a) in enumerate(points)
            if j != i
        )
    ]
    return sorted(front, key=lambda i: points[i])


def _front(runs: Sequence[Run]) -> list[Run]:
    scored = [run for run in runs if run.summary.get("accuracy") is not None]
    points = [(compute(run)["per_problem"], float(run.summary["accuracy"])) for run in scored]
    return [scored[i] for i in pareto_front(points)]


def table_row(run: Run) -> dict[str, Any]:
    """One run's numbers, unformatted: the CSV writes them as they are, Markdown formats them."""
    summary = run.summary
    ci = summary.get("accuracy_ci95") or [None, None]
    problems = int(summary.get("problems", 0))
    errors = int(summary.get("verifier_errors", 0))
    maj, pass_ = top_k(run, "maj@k"), top_k(run, "pass@k")
    spent = compute(run)
    return {
        "run": run.label,
        "benchmark": summary.get("benchmark"),
        "model": summary.get("model", _get(run.config, "model", "name")),
        "strategy": summary.get("strategy", _get(run.config, "strategy", "name")),
        "samples": summary.get("n", _get(run.config, "strategy", "n")),
        "oracle": is_oracle(run),
        "n": problems,
        "accuracy": summary.get("accuracy"),
        "accuracy_ci95_low": ci[0] if summary.get("accuracy") is not None else None,
        "accuracy_ci95_high": ci[1] if summary.get("accuracy") is not None else None,
        "maj_k": maj[0] if maj else None,
        "maj@k": maj[1] if maj else None,
        "pass_k": pass_[0] if pass_ else None,
        "pass@k": pass_[1] if pass_ else None,
        "verifier_errors": errors,
        "verifier_error_rate": errors / problems if problems else 0.0,
        "tokens_per_problem": _get(summary, "tokens", "completion_per_problem"),
        "compute_per_problem": spent["per_problem"],
        "compute": spent["total"],
        "tokens_per_s": _get(summary, "timing", "completion_tokens_per_s"),
    }


MARKDOWN_HEADERS = [
    "run",
    "benchmark",
    "model",
    "strategy",
    "n",
    "accuracy [95% CI]",
    "maj@k",
    "pass@k",
    "verifier errors",
    "tokens/problem",
    "compute/problem",
    "compute",
    "tokens/s",
]


def is_oracle(run: Run) -> bool:
    """Whether scorers or feedback saw the gold (`strategy.oracle`), from the summary or, for a
    run written before the summary said so, from its config (where the older oracle options,
    self-refine's feedback_sees_answer and MCTS's rollout_reward=verifier, also count)."""
    if "oracle" in run.summary:
        return bool(run.summary["oracle"])
    options = _get(run.config, "strategy", "options") or {}
    return bool(
        _get(run.config, "strategy", "oracle")
        or options.get("feedback_sees_answer")
        or (options.get("evaluation") == "rollout" and options.get("rollout_reward") == "verifier")
    )


def markdown_cells(row: dict[str, Any]) -> list[str]:
    strategy = str(row["strategy"])
    if isinstance(row["samples"], int) and row["samples"] > 1:
        strategy += f" (n={row['samples']})"
    if row.get("oracle"):
        strategy += " ORACLE"
    accuracy = "–"
    if row["accuracy"] is not None:
        low, high = row["accuracy_ci95_low"], row["accuracy_ci95_high"]
        accuracy = f"{_pct(row['accuracy'])} [{100 * low:.1f}, {100 * high:.1f}]"
    return [
        str(row["run"]),
        str(row["benchmark"] or "–"),
        str(row["model"] or "–"),
        strategy,
        str(row["n"]),
        accuracy,
        "–" if row["maj@k"] is None else f"{_pct(row['maj@k'])} (k={row['maj_k']})",
        "–" if row["pass@k"] is None else f"{_pct(row['pass@k'])} (k={row['pass_k']})",
        f"{row['verifier_errors']} ({_pct(row['verifier_error_rate'])})",
        _count(row["tokens_per_problem"]),
        _count(row["compute_per_problem"]),
        _count(row["compute"]),
        _count(row["tokens_per_s"]),
    ]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _count(value: float | None) -> str:
    """Token counts at a glance: 289, 57.9k, 1.23M."""
    if value is None:
        return "–"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


# --- breakdowns ------------------------------------------------------------------------------


def category_keys(runs: Sequence[Run]) -> list[str]:
    """Metadata keys that look like categories (level, subject, ...) in every run: scalar
    values, at least two of them, and few enough that a bar per value still reads."""
    found: list[str] = []
    candidates = {k for run in runs for row in run.rows for k in _metadata(row)}
    for key in sorted(candidates):
        per_run_values = [
            [_metadata(row)[key] for row in run.rows if key in _metadata(row)] for run in runs
        ]
        # a list (FOLIO's premises) is not a category, and cannot go in a set
        if not all(_scalar(v) for values in per_run_values for v in values):
            continue
        per_run = [set(values) for values in per_run_values]
        values = set().union(*per_run)
        if not all(per_run):
            continue
        if 2 <= len(values) <= MAX_CATEGORIES:
            found.append(key)
    return found


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    return row.get("problem", {}).get("metadata") or {}


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def run_breakdown(run: Run, key: str) -> dict[str, dict[str, Any]]:
    stored = _get(run.summary, "breakdown", key)
    return stored if isinstance(stored, dict) else breakdown(run.rows, key)


def breakdown_section(runs: Sequence[Run], key: str) -> str:
    tables = [run_breakdown(run, key) for run in runs]
    values = sorted({v for t in tables for v in t}, key=category_key)
    rows = []
    for value in values:
        cells = [value]
        for table in tables:
            cell = table.get(value)
            if cell is None or cell["accuracy"] is None:
                cells.append("–")
            else:
                low, high = cell["accuracy_ci95"]
                cells.append(
                    f"{_pct(cell['accuracy'])} [{100 * low:.1f}, {100 * high:.1f}] "
                    f"({cell['correct']}/{cell['scored']})"
                )
        rows.append(cells)
    headers = [key, *(run.label for run in runs)]
    return f"## Accuracy by {key}\n\n{markdown_table(headers, rows)}\n"


# --- writing ---------------------------------------------------------------------------------


def write_report(
    run_dirs: list[Path], out: Path, breakdown_keys: Sequence[str] | None = None
) -> ReportFiles:
    """`breakdown_keys` None: every metadata key that looks like a category in all runs."""
    if not run_dirs:
        raise ReportError("no run folders to report")
    loaded = [load_run(Path(d)) for d in run_dirs]
    labels = run_labels([r.config for r in loaded], [r.path.name for r in loaded])
    runs = [replace(run, label=label) for run, label in zip(loaded, labels, strict=True)]
    keys = category_keys(runs) if breakdown_keys is None else list(breakdown_keys)
    out.mkdir(parents=True, exist_ok=True)
    rows = [table_row(run) for run in runs]
    csv_path = _write_csv(rows, out / "report.csv")
    plots = plot_report(runs, keys, out)
    markdown_path = out / "report.md"
    markdown_path.write_text(_markdown(runs, rows, keys, plots, out), encoding="utf-8")
    return ReportFiles(markdown=markdown_path, csv=csv_path, plots=plots)


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def _markdown(
    runs: Sequence[Run],
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    plots: Sequence[Path],
    out: Path,
) -> str:
    parts = [
        "# Report\n",
        markdown_table(MARKDOWN_HEADERS, [markdown_cells(row) for row in rows]) + "\n",
        "Accuracy excludes verifier errors from the denominator. Compute = tokens generated + "
        "prompt tokens prefilled (not served from the prefix cache).\n",
        "Runs:\n\n" + "\n".join(f"- {run.label}: `{run.path}`" for run in runs) + "\n",
    ]
    front = _front(runs)
    if len(runs) > 1 and front:
        parts.insert(
            2,
            "Pareto front (no other run is as accurate for less compute), cheapest first: "
            + ", ".join(run.label for run in front)
            + ". Runs on different problem sets are not comparable point by point.\n",
        )
    if any(row.get("oracle") for row in rows):
        parts.insert(
            2,
            "ORACLE: scorers or feedback saw the gold answer (strategy.oracle), so the accuracy "
            "measures search with the answer key, not the model; not comparable with blind runs.\n",
        )
    parts += [breakdown_section(runs, key) for key in keys]
    parts += [f"![{plot.stem}]({plot.relative_to(out)})\n" for plot in plots]
    return "\n".join(parts)


# --- plots -----------------------------------------------------------------------------------


def plot_report(runs: Sequence[Run], keys: Sequence[str], out: Path) -> list[Path]:
    """PNGs drawn on Figure objects directly (the Agg canvas), not pyplot: no global state, no
    display needed, and nothing left open when a long-lived process makes many reports."""
    scored = [run for run in runs if run.summary.get("accuracy") is not None]
    plots: list[Path] = []
    if scored:
        plots.append(_accuracy_plot(scored, out / "accuracy.png"))
        plots.append(_compute_plot(scored, out / "accuracy_vs_compute.png"))
    for key in keys:
        tables = [run_breakdown(run, key) for run in runs]
        if any(tables):
            plots.append(_breakdown_plot(runs, key, tables, out / f"accuracy_by_{_slug(key)}.png"))
    return plots


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def _wrap(label: str) -> str:
    """Labels by difference grow with every differing key: one key per line keeps them legible."""
    return label.replace(", ", ",\n")


def _legend(fig: Any, runs: Sequence[Run]) -> None:
    """Below the axes, where long labels cover no data."""
    if len(runs) > 1:
        wide = any(len(run.label) > 40 for run in runs)
        fig.legend(loc="outside lower center", fontsize=8, ncols=1 if wide else min(len(runs), 3))


def _interval(summary: dict[str, Any]) -> tuple[float, float, float]:
    """Accuracy and the distances down and up to its interval, in percent, as errorbar wants
    (never negative: at 0% or 100% the Wilson bound can land a rounding error past the point,
    and matplotlib refuses a negative error bar)."""
    accuracy = 100 * summary["accuracy"]
    low, high = summary["accuracy_ci95"]
    return accuracy, max(0.0, accuracy - 100 * low), max(0.0, 100 * high - accuracy)


def _accuracy_plot(runs: Sequence[Run], path: Path) -> Path:
    lines = max(_wrap(run.label).count("\n") + 1 for run in runs)
    fig = _figure(8, 1.2 + 0.3 * len(runs) * max(lines, 2))
    ax = fig.add_subplot()
    points = [_interval(run.summary) for run in runs]
    ys = list(range(len(runs)))[::-1]
    ax.barh(ys, [p[0] for p in points], color="#4C72B0", alpha=0.8)
    ax.errorbar(
        [p[0] for p in points],
        ys,
        xerr=[[p[1] for p in points], [p[2] for p in points]],
        fmt="none",
        ecolor="black",
        capsize=4,
    )
    for y, (acc, _, _) in zip(ys, points, strict=True):
        ax.text(1, y, f"{acc:.1f}%", va="center", fontsize=9, color="white", weight="bold")
    ax.set_yticks(ys, [_wrap(run.label) for run in runs], fontsize=8)
    ax.set_xlim(0, 110)
    ax.set_xlabel("accuracy (%), bars: 95% Wilson interval")
    ax.set_title("Accuracy per run")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path)
    return path


def _compute_plot(runs: Sequence[Run], path: Path) -> Path:
    fig = _figure(8, 5 + 0.25 * len(runs))
    ax = fig.add_subplot()
    for run in runs:
        acc, down, up = _interval(run.summary)
        x = max(compute(run)["per_problem"], 1.0)  # log axis: keep an empty run on the plot
        ax.errorbar([x], [acc], yerr=[[down], [up]], fmt="o", capsize=4, label=run.label)
    front = _front(runs)
    if len(front) > 1:
        ax.plot(
            [max(compute(run)["per_problem"], 1.0) for run in front],
            [100 * run.summary["accuracy"] for run in front],
            "--",
            color="grey",
            linewidth=1,
            label="Pareto front",
        )
    ax.set_xscale("log")
    ax.set_xlabel("compute per problem (tokens generated + prefilled, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy against compute")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.15)
    _legend(fig, runs)
    fig.savefig(path)
    return path


def _breakdown_plot(
    runs: Sequence[Run], key: str, tables: Sequence[dict[str, dict[str, Any]]], path: Path
) -> Path:
    values = sorted({v for t in tables for v in t}, key=category_key)
    width = 0.8 / len(runs)
    fig = _figure(max(6.0, 1.0 + 0.35 * len(values) * len(runs)), 4.5 + 0.25 * len(runs))
    ax = fig.add_subplot()
    for i, (run, table) in enumerate(zip(runs, tables, strict=True)):
        xs, accs, downs, ups = [], [], [], []
        for j, value in enumerate(values):
            cell = table.get(value)
            if cell is None or cell["accuracy"] is None:
                continue
            acc, down, up = _interval(cell)
            xs.append(j - 0.4 + width * (i + 0.5))
            accs.append(acc)
            downs.append(down)
            ups.append(up)
        ax.bar(xs, accs, width=width * 0.95, label=run.label)
        ax.errorbar(xs, accs, yerr=[downs, ups], fmt="none", ecolor="black", capsize=2)
    rotate = 30 if max(len(v) for v in values) > 6 else 0
    ax.set_xticks(range(len(values)), values, rotation=rotate, ha="right" if rotate else "center")
    ax.set_xlabel(key)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Accuracy by {key} (95% Wilson intervals)")
    ax.grid(axis="y", alpha=0.3)
    _legend(fig, runs)
    fig.savefig(path)
    return path
