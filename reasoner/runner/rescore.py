"""`reasoner rescore RUN...`: verdicts and the summary recomputed from a run folder's saved
completions with the current verifiers and metrics, without generating anything.

A run's answers are only as good as the answer extraction that graded them; when extraction or
the metrics improve, the saved completions can be graded again instead of paying for a new
generation. Each strategy's samples are re-verified the way the strategy verified them:

- greedy, self-consistency: every sample re-verified, answers re-clustered, majority re-taken;
- program-aided: every printed answer line re-verified (programs are not re-run), re-voted;
- fol-prover, z3-program: every solver answer re-verified (programs are not re-run); a program
  the solver could not decide keeps its verdict; the final verdict is the majority answer's;
- best-of-n, beam search, DVTS, tree-of-thought, MCTS, self-refine: every candidate re-verified;
  the candidate the strategy picked stays picked (the pick is the search's, made without the
  gold answer) and its new verdict becomes the problem's;
- Lean strategies are not re-scored: their verdicts are the prover's, not an extraction's.

Nothing is lost: results.jsonl is rewritten atomically (a temporary file renamed over it) and
only once every verdict of the run came back without a new verifier error; the summary from
before the first rescore is kept as summary.before-rescore.json, and rescore.json records each
rescore (old and new metrics, every verdict that flipped).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from reasoner.config import EvalConfig
from reasoner.errors import ConfigError, ReasonerError
from reasoner.runner.benchmarks import load_benchmark
from reasoner.runner.metrics import majority_cluster, summarize
from reasoner.runner.run_folder import RunFolder
from reasoner.runs import read_results, write_text_atomic
from reasoner.strategies import load_strategy
from reasoner.strategies.best_of_n import BestOfN
from reasoner.strategies.execute_vote import ExecuteAndVote, answer_completion
from reasoner.strategies.program_aided import ProgramAided
from reasoner.strategies.sampling import SelfConsistency
from reasoner.strategies.self_refine import SelfRefine
from reasoner.strategies.voting import cluster_answers
from reasoner.types import Completion, Problem, Verdict
from reasoner.verifiers import Verifier
from reasoner.verifiers import load as load_verifier

#: how a strategy's verdicts are re-derived (see the module docstring)
Method = Literal["vote", "printed-vote", "execute", "keep-pick"]

#: summary keys that summarize() owns, including ones older versions wrote
METRIC_KEYS = {
    "sample_verifier_errors",
    "samples_per_problem",
    "samples_per_problem_min",
    "candidate_errors",
    "at_k_problems",
    "at_k_denominator",
    "pass@k",
    "maj@k",
}

BEFORE_SUMMARY = "summary.before-rescore.json"
RECORD = "rescore.json"


@dataclass
class Rescored:
    """One run folder re-graded: the new rows and summary, and what changed."""

    folder: Path
    strategy: str
    verifier: str
    rows: list[dict[str, Any]]
    old_summary: dict[str, Any]
    new_summary: dict[str, Any]
    flips: list[dict[str, Any]] = field(default_factory=list)
    samples_changed: int = 0
    samples: int = 0
    new_errors: list[str] = field(default_factory=list)
    #: sha256 of results.jsonl as it was read: the swap is refused if a run wrote to it since
    results_sha256: str = ""


def rescore_method(strategy_name: str) -> Method:
    strategy = load_strategy(strategy_name)
    if isinstance(strategy, ProgramAided):
        return "printed-vote"
    if isinstance(strategy, SelfConsistency):
        return "vote"
    if isinstance(strategy, ExecuteAndVote):
        return "execute"
    if strategy_name.startswith("lean-"):
        raise ConfigError(
            f"strategy {strategy_name!r}: verdicts come from the Lean prover, not from answer "
            "extraction, so there is nothing to re-score"
        )
    return "keep-pick"


def find_runs(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Eval run folders under `paths` (a run folder, or a folder holding runs at any depth,
    e.g. a training loop's rounds), and the folders that look like runs but are not eval runs,
    each with the reason."""
    runs: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        if not path.is_dir():
            raise ReasonerError(f"{path}: no such folder")
        found = sorted({p.parent for p in path.rglob("config.yaml")} | {path})
        before = len(runs)
        for folder in found:
            reason = _not_eval_run(folder)
            if reason is None:
                runs.append(folder)
            elif (folder / "config.yaml").is_file():
                skipped.append((folder, reason))
        if len(runs) == before:
            raise ReasonerError(f"{path}: no eval run folder (config.yaml and results.jsonl) in it")
    return runs, skipped


def _not_eval_run(folder: Path) -> str | None:
    config = folder / "config.yaml"
    if not config.is_file():
        return "no config.yaml"
    if not (folder / "results.jsonl").is_file():
        return "no results.jsonl (not an eval run: a training or loop config)"
    data = yaml.safe_load(config.read_text()) or {}
    if not isinstance(data, dict) or "strategy" not in data or "benchmark" not in data:
        return "config.yaml is not an eval config (no benchmark/strategy)"
    return None


def load_config(folder: Path) -> EvalConfig:
    path = folder / "config.yaml"
    try:
        return EvalConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: not a valid eval config: {exc}") from None


def run_verifier(config: EvalConfig) -> tuple[str, Verifier]:
    """The run's own verifier, as `reasoner eval` built it."""
    name = config.verifier or load_benchmark(config.benchmark).verifier
    return name, load_verifier(name, timeout_s=config.verifier_timeout_s)


def rescore_folder(folder: Path) -> Rescored:
    """Re-grade one run folder in memory; nothing is written."""
    config = load_config(folder)
    method = rescore_method(config.strategy.name)
    run = RunFolder(folder)
    digest = _sha256(run.results_path)
    rows = read_results(run.path)
    if not rows:
        raise ReasonerError(f"{run.results_path}: no finished problems to re-score")
    old_summary = json.loads(run.summary_path.read_text()) if run.summary_path.is_file() else {}
    name, verifier = run_verifier(config)
    try:
        new_rows = [rescore_row(row, verifier, method, config.strategy.name) for row in rows]
    finally:
        verifier.close()
    result = Rescored(
        folder,
        config.strategy.name,
        name,
        new_rows,
        old_summary,
        merge_summary(old_summary, summarize(new_rows)),
        results_sha256=digest,
    )
    for old, new in zip(rows, new_rows, strict=True):
        pid = str(old["problem"]["id"])
        if old["verdict"]["status"] != new["verdict"]["status"]:
            result.flips.append(
                {
                    "id": pid,
                    "old": old["verdict"]["status"],
                    "new": new["verdict"]["status"],
                    "old_answer": old["prediction"],
                    "new_answer": new["prediction"],
                }
            )
            if new["verdict"]["status"] == "error":
                result.new_errors.append(pid)
        for old_step, new_step in zip(old["steps"], new["steps"], strict=True):
            for a, b in zip(old_step["verdicts"], new_step["verdicts"], strict=True):
                result.samples += 1
                result.samples_changed += a["status"] != b["status"]
                if (
                    b["status"] == "error"
                    and a["status"] != "error"
                    and pid not in result.new_errors
                ):
                    result.new_errors.append(pid)
    return result


def rescore_row(
    row: dict[str, Any], verifier: Verifier, method: Method, strategy: str
) -> dict[str, Any]:
    """One results row graded again; the strategy's choices (programs, search, pick) stand."""
    problem = Problem(**row["problem"])
    old_samples = [v for step in row["steps"] for v in step["verdicts"]]
    completions = [c for step in row["steps"] for c in step["completions"]]
    if len(completions) != len(old_samples):
        raise ReasonerError(
            f"problem {problem.id!r}: {len(completions)} completions but {len(old_samples)} "
            "verdicts; the row cannot be re-scored sample by sample"
        )
    # what each sample's verdict was computed from: its completion, or an answer the strategy
    # derived from it (a printed line, a solver's answer); None keeps the old verdict
    inputs: list[Completion | None]
    first_step = len(row["steps"][0]["verdicts"]) if row["steps"] else 0
    if method in ("vote", "keep-pick"):
        inputs = [Completion.from_dict(c) for c in completions]
    elif method == "printed-vote":
        # the programs' printed lines (step 0); a mixed run's chain-of-thought samples after it
        inputs = [
            Completion.from_dict(c)
            if i >= first_step
            else None
            if "printed" not in v["details"]
            else Completion(v["details"]["printed"], "stop", 0, 0)
            for i, (c, v) in enumerate(zip(completions, old_samples, strict=True))
        ]
    else:
        inputs = [
            Completion.from_dict(c)
            if v["details"].get("fallback") == "cot"  # the chain-of-thought fallback's answer
            else _solver_answer(row, i, v)
            for i, (c, v) in enumerate(zip(completions, old_samples, strict=True))
        ]
    # a request the engine refused (longer than the context window) stays an `error`
    inputs = [
        None if c.get("finish_reason") == "error" else given
        for c, given in zip(completions, inputs, strict=True)
    ]
    pending = [(i, c) for i, c in enumerate(inputs) if c is not None]
    checked = verifier.verify_batch([(problem, c) for _, c in pending])
    samples = [Verdict.from_dict(v) for v in old_samples]
    for (i, _), verdict in zip(pending, checked, strict=True):
        samples[i] = _with_details(verdict, old_samples[i]["details"])
    clusters = cluster_answers(verifier, problem, samples)
    old_final = row["verdict"]
    if method in ("vote", "printed-vote"):
        winner = majority_cluster(clusters, len(clusters))
        if not samples:  # the engine returned nothing: the saved verdict stands
            final = Verdict.from_dict(old_final)
        else:  # with no answer among the samples, the first sample's verdict stands
            final = samples[0] if winner is None else samples[clusters.index(winner)]
        prediction = final.answer
    elif method == "execute":
        prediction = row["prediction"]
        final = Verdict.from_dict(old_final)
        if old_final["details"].get("answered_by") == "fallback":
            final = _with_details(samples[-1], old_final["details"])  # the fallback is last
            prediction = final.answer
        elif prediction is not None:
            verdict = verifier.verify(problem, answer_completion(prediction))
            final = _with_details(verdict, old_final["details"])
    else:
        picked = _picked_sample(row, old_samples, strategy)
        final = _with_details(samples[picked], old_final["details"])
        prediction = final.answer
    new = {
        **row,
        "prediction": prediction,
        "verdict": final.to_dict(),
        "clusters": clusters,
        "steps": [],
    }
    start = 0
    for step in row["steps"]:
        size = len(step["verdicts"])
        verdicts = [v.to_dict() for v in samples[start : start + size]]
        new["steps"].append({**step, "verdicts": verdicts})
        start += size
    if "candidates" not in row:  # rows written before strategies declared their candidates
        if method == "execute" and row["steps"]:
            new["candidates"] = list(range(len(row["steps"][0]["verdicts"])))
        elif isinstance(load_strategy(strategy), SelfRefine) and samples:
            new["candidates"] = [len(samples) - 1]
    return new


def _with_details(verdict: Verdict, old: dict[str, Any]) -> Verdict:
    """The new verdict, keeping what the strategy had added to the old one's details (chain,
    round, picked sample, sandbox run); the verifier's own keys are the new ones."""
    return dataclasses.replace(verdict, details={**old, **verdict.details})


def _solver_answer(row: dict[str, Any], index: int, verdict: dict[str, Any]) -> Completion | None:
    """Execute-and-vote sample `index`: the solver's answer as the strategy showed it to the
    verifier, from the attempt's tree node; None for a program the solver could not decide."""
    tree = row.get("tree") or []
    if len(tree) <= index or tree[index].get("id") != index:
        raise ReasonerError(
            f"problem {row['problem']['id']!r}: the tree has no node for program {index}"
        )
    answer = tree[index].get("answer")
    return None if answer is None else answer_completion(answer)


def _picked_sample(row: dict[str, Any], samples: list[dict[str, Any]], strategy: str) -> int:
    """Which sample the strategy picked as the problem's answer."""
    final = row["verdict"]
    picked = final["details"].get("picked_sample")
    if isinstance(picked, int) and 0 <= picked < len(samples):
        return picked
    if isinstance(load_strategy(strategy), SelfRefine) and samples:
        return len(samples) - 1  # the last round's answer is the problem's
    for index, verdict in enumerate(samples):
        if verdict == final:  # tree search: the picked candidate's verdict, unchanged
            return index
    if isinstance(load_strategy(strategy), BestOfN):
        raise ReasonerError(f"problem {row['problem']['id']!r}: no picked_sample in its verdict")
    raise ReasonerError(
        f"problem {row['problem']['id']!r}: none of its samples has the problem's verdict, so "
        "the picked candidate is unknown"
    )


def merge_summary(old: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The old summary's header and timing, with every metric recomputed (metrics the current
    code no longer reports are dropped)."""
    merged = {k: metrics.get(k, v) for k, v in old.items() if k in metrics or k not in METRIC_KEYS}
    return {**merged, **metrics, "rescored": datetime.now(UTC).isoformat()}


def write_rescored(result: Rescored) -> None:
    """Keep the old summary, record the change, then swap in the new results and summary."""
    if result.new_errors:
        raise ReasonerError(
            f"{result.folder}: the verifier failed on problems that it had graded before "
            f"({', '.join(result.new_errors[:5])}); nothing was written"
        )
    # a run still being written is refused, not rewritten under its writer
    with RunFolder(result.folder).held() as run:
        _swap_in(run, result)


def _swap_in(run: RunFolder, result: Rescored) -> None:
    if _sha256(run.results_path) != result.results_sha256:
        raise ReasonerError(
            f"{run.results_path} changed while it was being re-scored (a run wrote to it); "
            "nothing was written: re-run rescore"
        )
    before = result.folder / BEFORE_SUMMARY
    if run.summary_path.is_file() and not before.exists():  # the first rescore's original
        before.write_text(run.summary_path.read_text())
    record_path = result.folder / RECORD
    history = json.loads(record_path.read_text()) if record_path.is_file() else []
    history.append(change_record(result))
    run.load_results()  # as resume does: a cut-off tail goes to results.jsonl.torn, not lost
    run.write_results(result.rows)
    run.write_summary(result.new_summary)
    _write_json(record_path, history)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def change_record(result: Rescored) -> dict[str, Any]:
    keys = ("accuracy", "correct", "scored", "verifier_errors", "pass@k", "maj@k")
    return {
        "rescored": result.new_summary["rescored"],
        "verifier": result.verifier,
        "old": {k: result.old_summary.get(k) for k in keys},
        "new": {k: result.new_summary.get(k) for k in keys},
        "samples_changed": result.samples_changed,
        "samples": result.samples,
        "flips": result.flips,
    }


def describe(result: Rescored) -> str:
    old, new = result.old_summary, result.new_summary
    lines = [f"{result.folder}  ({result.strategy}, verifier {result.verifier})"]
    lines.append(
        f"  accuracy  {_num(old.get('accuracy'))} -> {_num(new.get('accuracy'))}  "
        f"({old.get('correct')}/{old.get('scored')} -> {new.get('correct')}/{new.get('scored')} "
        f"scored; verifier errors {old.get('verifier_errors')} -> {new.get('verifier_errors')})"
    )
    kinds = Counter(f"{f['old']}->{f['new']}" for f in result.flips)
    flips = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
    lines.append(
        f"  verdicts  {len(result.flips)} of {len(result.rows)} problems flipped ({flips}); "
        f"{result.samples_changed} of {result.samples} sample verdicts changed"
    )
    for metric in ("pass@k", "maj@k"):
        before, after = old.get(metric) or {}, new.get(metric) or {}
        if before or after:
            ks = sorted(set(before) | set(after), key=int)
            changes = "  ".join(f"@{k} {_num(before.get(k))}->{_num(after.get(k))}" for k in ks)
            lines.append(f"  {metric:<8}  {changes}")
    if result.new_errors:
        lines.append(f"  NEW VERIFIER ERRORS on {len(result.new_errors)} problems: not written")
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rescore",
        help="re-grade run folders' saved completions with the current verifiers and metrics",
        description="Recomputes verdicts and summary.json from results.jsonl without generating; "
        "a folder of runs (a loop's rounds) is searched for eval run folders.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or folders of runs")
    p.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")


def run(args: argparse.Namespace) -> int:
    runs, skipped = find_runs([Path(p) for p in args.runs])
    for folder, reason in skipped:
        print(f"{folder}  skipped: {reason}")
    failed = 0
    for folder in runs:
        try:
            result = rescore_folder(folder)
        except ReasonerError as exc:
            print(f"{folder}  NOT re-scored: {exc}")
            failed += 1
            continue
        print(describe(result))
        if args.dry_run:
            print("  dry run: nothing written")
            continue
        try:
            write_rescored(result)
        except ReasonerError as exc:
            print(f"  NOT written: {exc}")
            failed += 1
    return 1 if failed else 0
