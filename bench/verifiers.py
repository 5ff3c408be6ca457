"""Verifier throughput and latency on this machine, written to bench/results/verifiers.json.

- math: verdicts per second through `verify_batch` (2 worker processes), on the committed GSM8K
  completions and the regression suite's completions (which mostly take the math-verify path);
- sandbox: p50/p95 wall time of one sandboxed Python run (when bubblewrap is installed);
- fol: p50/p95 of one prover call on FOLIO validation problems (when the provers are installed).

    python bench/verifiers.py
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasoner.runner.manifest import hardware, package_versions
from reasoner.types import Completion, Problem
from reasoner.verifiers import load
from reasoner.verifiers.selftest import load_cases, suite_paths

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GSM8K_RUN = ROOT / "eval" / "results" / "gsm8k-qwen05-greedy-200" / "results.jsonl"


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
    for line in GSM8K_RUN.read_text().splitlines():
        row = json.loads(line)
        problem = Problem(
            row["problem"]["id"], row["problem"]["question"], row["problem"]["answer"]
        )
        for completion in row["steps"][0]["completions"]:
            gsm8k.append((problem, Completion.from_dict(completion)))
    suite = [
        (Problem(c["id"], "", c["gold"]), Completion(c["completion"], "stop", 0, 0))
        for c in load_cases(suite_paths()["math"])
    ]
    return {"gsm8k_completions": gsm8k, "regression_suite": suite}


def bench_math() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with load("math", workers=2) as verifier:
        verifier.verify_batch(math_pairs()["regression_suite"][:4])  # start the workers
        for name, pairs in math_pairs().items():
            rounds = []
            for _ in range(3):
                start = time.perf_counter()
                verifier.verify_batch(pairs)
                rounds.append(len(pairs) / (time.perf_counter() - start))
            results[name] = {"verdicts": len(pairs), "verdicts_per_s": statistics.median(rounds)}
    return results


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
        for line in (ROOT.parent / "shared" / "data" / "folio" / "folio-validation.jsonl")
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
    result = {
        "math": bench_math(),
        "sandbox_run": bench_sandbox(),
        "fol_decide": bench_fol(),
        "packages": package_versions(),
        "hardware": hardware(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verifiers.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("math", "sandbox_run", "fol_decide")}, indent=2))


if __name__ == "__main__":
    main()
