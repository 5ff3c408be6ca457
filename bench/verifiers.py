"""Verifier throughput and latency on this machine, written to bench/results/verifiers.json
(`--only math`: bench/results/verifiers-math.json).

- math: verdicts per second through `verify_batch` (2 worker processes), on the committed GSM8K
  completions, the regression suite's completions and the peer suite (other graders' published
  cases; these mostly take the math-verify path), side by side with math-verify called directly
  (`verify(parse("$" + gold + "$"), parse(completion))`) in a pool of as many processes, with
  the ratio; the target is >= 500 verdicts/s on 2 cores;
- sandbox: p50/p95 wall time of one sandboxed Python run (when bubblewrap is installed);
- fol: p50/p95 of one prover call on FOLIO validation problems (when the provers are installed).

    python bench/verifiers.py [--only math]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from reasoner.resources import data_root
from reasoner.runner.manifest import hardware, package_versions
from reasoner.runs import read_results
from reasoner.types import Completion, Problem
from reasoner.verifiers import load
from reasoner.verifiers.selftest import load_cases, suite_paths

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GSM8K_RUN = ROOT / "results" / "gsm8k-qwen05-greedy-200"
PEER_SUITE = ROOT / "verifiers" / "suites" / "peer-math.jsonl"
WORKERS = 2
TARGET_VERDICTS_PER_S = 500


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def timed(calls: list[Callable[[], Any]]) -> list[float]:
    out = []
    for call in calls:
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def math_pairs() -> dict[str, list[tuple[Problem, Completion]]]:
    gsm8k = []
    for row in read_results(GSM8K_RUN):
        problem = Problem(
            row["problem"]["id"], row["problem"]["question"], row["problem"]["answer"]
        )
        for completion in row["steps"][0]["completions"]:
            gsm8k.append((problem, Completion.from_dict(completion)))
    suite = [
        (Problem(c["id"], "", c["gold"]), Completion(c["completion"], "stop", 0, 0))
        for c in load_cases(suite_paths()["math"])
    ]
    peer = [
        (Problem(c["id"], "", c["gold"]), Completion(c["completion"], "stop", 0, 0))
        for c in load_cases(PEER_SUITE)
    ]
    return {"gsm8k_completions": gsm8k, "regression_suite": suite, "peer_suite": peer}


def _direct_verdict(gold: str, completion: str) -> bool:
    """math-verify called directly, as its README shows (in a pool worker: main thread)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        return bool(verify(parse("$" + gold + "$"), parse(completion)))
    except Exception:
        return False


def _direct_batch(pool: ProcessPoolExecutor, pairs: list[tuple[Problem, Completion]]) -> None:
    golds = [p.answer or "" for p, _ in pairs]
    texts = [c.text for _, c in pairs]
    list(pool.map(_direct_verdict, golds, texts, chunksize=8))


def median_rate(run: Callable[[], object], count: int, rounds: int = 3) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        samples.append(count / (time.perf_counter() - start))
    return statistics.median(samples)


def bench_math() -> dict[str, Any]:
    results: dict[str, Any] = {"workers": WORKERS, "target_verdicts_per_s": TARGET_VERDICTS_PER_S}
    pair_sets = math_pairs()
    with load("math", workers=WORKERS) as verifier, ProcessPoolExecutor(WORKERS) as pool:
        verifier.verify_batch(pair_sets["regression_suite"][:4])  # start the workers
        _direct_batch(pool, pair_sets["regression_suite"][:4])
        for name, pairs in pair_sets.items():
            ours = median_rate(lambda p=pairs: verifier.verify_batch(p), len(pairs))
            direct = median_rate(lambda p=pairs: _direct_batch(pool, p), len(pairs))
            results[name] = {
                "verdicts": len(pairs),
                "verdicts_per_s": ours,
                "math_verify_direct_verdicts_per_s": direct,
                "ratio_to_math_verify_direct": ours / direct,
            }
    return results


def cpu_info() -> dict[str, Any]:
    """Model and feature flags of the CPU the figures were measured on (Linux)."""
    info: dict[str, Any] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and "model" not in info:
            info["model"] = value.strip()
        elif key == "flags" and "flags" not in info:
            info["flags"] = value.split()
    return info


def bench_sandbox() -> dict[str, Any] | None:
    if importlib.util.find_spec("reasoner.verifiers.sandbox") is None:
        return None
    from reasoner.verifiers.sandbox import run_in_sandbox

    run_in_sandbox("print(1)")
    calls = [lambda i=i: run_in_sandbox(f"print(sum(range({i})))") for i in range(40)]
    return percentiles(timed(calls))


def bench_fol() -> dict[str, Any] | None:
    if importlib.util.find_spec("reasoner.verifiers.fol.provers") is None:
        return None
    from reasoner.verifiers.fol.provers import decide

    rows = [
        json.loads(line)
        for line in (data_root() or ROOT.parent / "shared" / "data")
        .joinpath("folio", "folio-validation.jsonl")
        .read_text()
        .splitlines()[:40]
    ]
    out: dict[str, Any] = {}
    for prover in ("e", "prover9", "z3"):
        try:
            calls = [
                lambda r=r, p=prover: decide(
                    r["premises-FOL"], r["conclusion-FOL"], prover=p, timeout_s=10
                )
                for r in rows
            ]
            out[prover] = percentiles(timed(calls))
        except Exception as exc:  # a prover that is not installed is reported, not fatal
            out[prover] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["math"], help="run only this benchmark")
    args = parser.parse_args()
    result = {
        "math": bench_math(),
        "sandbox_run": None if args.only else bench_sandbox(),
        "fol_decide": None if args.only else bench_fol(),
        "packages": package_versions(),
        "hardware": {**hardware(), "cpu": cpu_info(), "load_average_1m": os.getloadavg()[0]},
    }
    RESULTS.mkdir(exist_ok=True)
    # a partial run gets its own file, so the full run's figures are not overwritten
    name = f"verifiers-{args.only}.json" if args.only else "verifiers.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("math", "sandbox_run", "fol_decide")}, indent=2))


if __name__ == "__main__":
    main()
