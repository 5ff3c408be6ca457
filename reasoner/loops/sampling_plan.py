"""How many samples each training problem gets in a round of `reasoner iterate`: DART-Math's
difficulty-aware rejection sampling (Tong et al., 2024, "DART-Math: Difficulty-Aware Rejection
Tuning for Mathematical Problem-Solving"), or the older one-extra-batch `hard_n`.

- `uniform` (DART's Uniform): sample in batched rounds until every problem has `k` correct
  responses or has used its budget of `max_samples` samples.
- `prop2diff` (DART's Prop2Diff): the same loop, but a problem's target number of correct
  responses is proportional to its difficulty, the hardest problem of the slice getting `k`.
  Difficulty is DART's: the fail rate (1 - pass rate) over the round's first samples.
  A problem with difficulty 0 still gets a target of 1 (see `targets`).
- `hard_n`: one more batch of `hard_n` samples for problems at or below `hard_threshold`.

Every batched round is one eval run (one engine call) per distinct sample count, over the
problems still short of their target, in its own run folder (`samples-dart-<j>-n<n>`), so a
killed loop resumes inside the sampling too: the plan of round j depends only on the folders
of earlier rounds, which are on disk. The plan and what it reached are written to
`sampling-plan.json` beside them, and drawn by `reasoner.loops.report.plot_correct_by_difficulty`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reasoner.runs import read_results, write_text_atomic

PLAN_FILE = "sampling-plan.json"

#: (folder name, problem ids, samples per problem, batch number from 1) -> the folder written
RunBatch = Callable[[str, list[str], int, int], Path]


@dataclass
class Tally:
    """One problem's samples so far and how many of them were verified correct."""

    samples: int = 0
    correct: int = 0

    @property
    def pass_rate(self) -> float:
        return self.correct / self.samples if self.samples else 0.0


def tally(folders: Sequence[Path]) -> dict[str, Tally]:
    """Samples and correct samples per problem id over run folders, in first-seen order."""
    counts: dict[str, Tally] = {}
    for folder in folders:
        for row in read_results(folder, missing_ok=True):
            verdicts = [v for step in row["steps"] for v in step["verdicts"]]
            entry = counts.setdefault(str(row["problem"]["id"]), Tally())
            entry.samples += len(verdicts)
            entry.correct += sum(v["status"] == "correct" for v in verdicts)
    return counts


def difficulties(first: dict[str, Tally]) -> dict[str, float]:
    """DART's difficulty: the fail rate over the first samples (verifier errors count as
    failures, since they are not correct responses either)."""
    return {pid: 1.0 - t.pass_rate for pid, t in first.items()}


def targets(method: str, k: int, difficulty: dict[str, float]) -> dict[str, int]:
    """Correct responses wanted per problem. Prop2Diff: ceil(k * d / d_max), so the hardest
    problem gets k; the floor of 1 is reasoner's choice (a problem every first sample solved
    would otherwise get no data at all)."""
    if method == "uniform":
        return dict.fromkeys(difficulty, k)
    hardest = max(difficulty.values(), default=0.0)
    if hardest <= 0:
        return dict.fromkeys(difficulty, 1)
    return {pid: max(1, math.ceil(k * d / hardest - 1e-9)) for pid, d in difficulty.items()}


def pending(
    counts: dict[str, Tally], wanted: dict[str, int], max_samples: int, round_n: int
) -> dict[int, list[str]]:
    """The next batched round: problems short of their target with budget left, grouped by
    how many samples each gets (round_n, or what is left of its budget)."""
    groups: dict[int, list[str]] = {}
    for pid, target in wanted.items():
        have = counts.get(pid, Tally())
        if have.correct >= target or have.samples >= max_samples:
            continue
        groups.setdefault(min(round_n, max_samples - have.samples), []).append(pid)
    return dict(sorted(groups.items(), reverse=True))


@dataclass(frozen=True)
class ProblemPlan:
    id: str
    difficulty: float
    target: int | None  # None: hard_n, which has no target
    samples: int
    correct: int

    @property
    def stopped(self) -> str:
        if self.target is None:
            return "hard_n"
        return "target" if self.correct >= self.target else "budget"


def sample_to_quota(
    method: str,
    first_folder: Path,
    k: int,
    max_samples: int,
    round_n: int,
    run_batch: RunBatch,
) -> tuple[list[Path], list[ProblemPlan]]:
    """DART's rejection sampling after the round's first samples: the extra run folders and
    the per-problem plan (difficulty, target, samples, correct) it ended with."""
    first = tally([first_folder])
    difficulty = difficulties(first)
    wanted = targets(method, k, difficulty)
    folders: list[Path] = []
    batch = 0
    # each batch draws at least one sample for every pending problem, so the budget bounds the
    # batches; the cap only matters when an engine returns nothing (no progress, no end)
    max_batches = -(-max_samples // max(1, min(round_n, max_samples)))
    while batch < max_batches:
        counts = tally([first_folder, *folders])
        groups = pending(counts, wanted, max_samples, round_n)
        if not groups:
            break
        batch += 1
        for n, ids in groups.items():
            folders.append(run_batch(f"samples-dart-{batch}-n{n}", ids, n, batch))
    counts = tally([first_folder, *folders])
    plan = [
        ProblemPlan(pid, difficulty[pid], wanted[pid], counts[pid].samples, counts[pid].correct)
        for pid in difficulty
    ]
    return folders, plan


def describe(folders: Sequence[Path]) -> list[ProblemPlan]:
    """The plan view of a hard_n round (no targets): difficulty from the first folder."""
    difficulty = difficulties(tally(list(folders)[:1]))
    counts = tally(folders)
    return [
        ProblemPlan(pid, d, None, counts[pid].samples, counts[pid].correct)
        for pid, d in difficulty.items()
    ]


def write_plan(path: Path, method: str, plan: list[ProblemPlan], stage: Any) -> None:
    """The round's plan as JSON, and its histogram (correct responses against difficulty)
    beside it as PNG."""
    from reasoner.loops.report import plot_correct_by_difficulty

    stopped = [p.stopped for p in plan]
    settings = (
        {"hard_n": stage.hard_n, "hard_threshold": stage.hard_threshold}
        if method == "hard_n"
        else {"k": stage.k, "max_samples": stage.max_samples, "round_n": stage.round_n}
    )
    document = {
        "method": method,
        **settings,
        "problems": len(plan),
        "reached_target": stopped.count("target"),
        "stopped_at_budget": stopped.count("budget"),
        "samples": sum(p.samples for p in plan),
        "correct": sum(p.correct for p in plan),
        "per_problem": [{**asdict(p), "stopped": p.stopped} for p in plan],
    }
    write_text_atomic(path, json.dumps(document, indent=2) + "\n")
    plot_correct_by_difficulty(document, path.with_name(HISTOGRAM))


HISTOGRAM = "correct-by-difficulty.png"


def read_plan(round_folder: Path) -> dict[str, Any] | None:
    path = round_folder / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def round_summary(round_folder: Path) -> dict[str, Any] | None:
    """What round.json says of the round's sampling (None for round 0, which samples none)."""
    plan = read_plan(round_folder)
    if plan is None:
        return None
    keys = ("method", "problems", "reached_target", "stopped_at_budget", "samples", "correct")
    histogram = round_folder / HISTOGRAM
    return {
        **{key: plan[key] for key in keys},
        "histogram": str(histogram) if histogram.is_file() else None,
    }


def sample_folders(round_folder: Path) -> list[Path]:
    """A round's sample run folders: `samples`, then the DART batches in order, then
    `samples-hard`."""

    def order(path: Path) -> tuple[int, int, str]:
        if path.name == "samples":
            return (0, 0, "")
        if path.name.startswith("samples-dart-"):
            return (1, int(path.name.split("-")[2]), path.name)
        return (2, 0, path.name)

    found = [p for p in round_folder.glob("samples*") if (p / "results.jsonl").is_file()]
    return sorted(found, key=order)


def record_caps(round_folders: Sequence[Path]) -> dict[str, int]:
    """Per problem, the sum of its targets over the given rounds (DART methods only)."""
    caps: dict[str, int] = {}
    for folder in round_folders:
        plan = read_plan(folder)
        if plan is None or plan["method"] == "hard_n":
            continue
        for entry in plan["per_problem"]:
            caps[entry["id"]] = caps.get(entry["id"], 0) + int(entry["target"])
    return caps


def cap_per_problem(records: list[dict[str, Any]], caps: dict[str, int]) -> list[dict[str, Any]]:
    """At most caps[id] records per problem id (in order); ids without a cap are kept."""
    kept: list[dict[str, Any]] = []
    used: dict[str, int] = {}
    for record in records:
        pid = str(record.get("id"))
        if pid in caps and used.get(pid, 0) >= caps[pid]:
            continue
        used[pid] = used.get(pid, 0) + 1
        kept.append(record)
    return kept
