"""One majority vote over the saved samples of several runs of the same problems, without
generating anything: e.g. PAL SC@8 and chain-of-thought SC@8 on the same 500 GSM8K problems
become a 16-answer mixed vote (what the `program-aided` strategy's `cot_n` option does in one
engine call), scored from the samples' own verdicts.

Answers are grouped with the benchmark's verifier (`equivalent`, as every vote in reasoner is),
in the order the runs are given (a tie goes to the answer seen first, so the first run breaks
ties). The gold answer is never read to pick: only each sample's saved verdict says whether the
picked answer was right. Each run's own vote is recomputed the same way as a check, and its
accuracy must match the run's summary.

    python bench/vote_union.py results/gsm8k-500/pal-sc8 results/gsm8k-500/sc8 \
        --out results/gsm8k-500/pal-cot-union.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reasoner.runner.metrics import wilson_interval
from reasoner.runs import read_traces
from reasoner.strategies.voting import cluster_answers, majority_cluster
from reasoner.types import Trace, Verdict
from reasoner.verifiers import load as load_verifier
from reasoner.verifiers.base import Verifier


def _samples(trace: Trace) -> list[Verdict]:
    return [v for step in trace.steps for v in step.verdicts]


def _vote(traces: list[Trace], verifier: Verifier) -> dict[str, Any]:
    """Majority over the samples of `traces` (one problem); whether the pick was correct."""
    problem = traces[0].problem
    verdicts = [v for trace in traces for v in _samples(trace)]
    clusters = cluster_answers(verifier, problem, verdicts)
    winner = majority_cluster(clusters, len(clusters))
    correct = winner is not None and verdicts[clusters.index(winner)].status == "correct"
    return {
        "correct": correct,
        "any_correct": any(v.status == "correct" for v in verdicts),
        "samples": len(verdicts),
        "tokens": sum(t.usage.prompt_tokens + t.usage.completion_tokens for t in traces),
    }


def _score(per_problem: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(per_problem)
    correct = sum(p["correct"] for p in per_problem)
    low, high = wilson_interval(correct, n)
    return {
        "problems": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": [low, high],
        "pass_at_all_samples": sum(p["any_correct"] for p in per_problem) / n,
        "tokens_per_problem": sum(p["tokens"] for p in per_problem) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of the same problems")
    parser.add_argument("--verifier", default="math", help="groups answers (default: math)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args()

    verifier = load_verifier(args.verifier)
    by_run = [{t.problem.id: t for t in read_traces(run)} for run in args.runs]
    shared = sorted(set.intersection(*(set(r) for r in by_run)), key=str)
    report: dict[str, Any] = {"runs": {}, "problems": len(shared)}
    for run, traces in zip(args.runs, by_run, strict=True):
        own = _score([_vote([traces[i]], verifier) for i in shared])
        summary = json.loads((run / "summary.json").read_text())
        if len(shared) == summary["problems"] and own["correct"] != summary["correct"]:
            raise SystemExit(
                f"{run}: the recomputed vote has {own['correct']} correct, its summary "
                f"{summary['correct']}: the vote here is not the run's"
            )
        report["runs"][str(run)] = own
    report["union"] = _score([_vote([r[i] for r in by_run], verifier) for i in shared])
    verifier.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
