"""Chain-of-thought against translate-then-prove, on the same slices of FOLIO, ProofWriter and
ProntoQA, with one loaded engine.

For each benchmark, three runs of `reasoner eval` (through `run_eval`, so each is an ordinary,
resumable run folder with its manifest): `greedy` (the benchmark's chain-of-thought prompt),
`fol-prover` with one greedy translation and one repair round, and `fol-prover` with K sampled
translations, majority vote and one repair round. The table gives accuracy with its 95% Wilson
interval, problems without an answer, the error rates of the translations (first round, and
after repair): parse errors (no formulas, or formulas that do not parse), prover errors (timeout,
crash, contradictory premises) and other errors (a label that is none of the options, a copied
example, formulas sharing no symbol with the problem), and tokens per problem (prefilled plus
generated). Writes <out>/comparison.md and
<out>/comparison.json.

    python bench/fol_comparison.py --limit 40 --out results/fol-comparison
    python bench/fol_comparison.py --limit 2 --out /tmp/fol-check      # a quick check

Each run is also a plain command: `reasoner eval BENCH --strategy fol-prover --n 5
--temperature 0.7 --set strategy.options.max_refine_rounds=1 ...`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.config import EvalConfig, build_config
from reasoner.models import load_generator
from reasoner.runner.evaluate import run_eval
from reasoner.runs import read_results
from reasoner.strategies.fol_prover import error_rates

BENCHMARKS = ("folio", "proofwriter", "prontoqa")


@dataclass(frozen=True)
class Method:
    label: str
    overrides: tuple[str, ...]


def methods(k: int, refine_rounds: int) -> list[Method]:
    return [
        Method("chain-of-thought (greedy)", ("strategy.name=greedy",)),
        Method(
            f"fol-prover (1 greedy translation, {refine_rounds} repair round)",
            (
                "strategy.name=fol-prover",
                "strategy.n=1",
                "sampling.temperature=0",
                f"strategy.options.max_refine_rounds={refine_rounds}",
            ),
        ),
        Method(
            f"fol-prover (majority of {k} at T=0.7, {refine_rounds} repair round)",
            (
                "strategy.name=fol-prover",
                f"strategy.n={k}",
                "sampling.temperature=0.7",
                f"strategy.options.max_refine_rounds={refine_rounds}",
            ),
        ),
    ]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def row(benchmark: str, method: Method, summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    results = read_results(folder)
    rates = error_rates(results) if "fol-prover" in method.overrides[0] else None
    low, high = summary["accuracy_ci95"]
    return {
        "benchmark": benchmark,
        "method": method.label,
        "run": str(folder),
        "problems": summary["problems"],
        "accuracy": summary["accuracy"],
        "accuracy_ci95": [low, high],
        "no_answer": summary["no_answer"],
        "verifier_errors": summary["verifier_errors"],
        "tokens_per_problem": summary["compute"]["per_problem"],
        "completion_tokens_per_problem": summary["tokens"]["completion_per_problem"],
        "fol_error_rates": rates,
        # execute-and-vote: problems answered by a program / by the CoT fallback (Logic-LM)
        "answered_by": summary.get("answered_by"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | method | problems | accuracy [95% CI] | no answer | parse errors "
        "(first / after repair) | prover errors (first / after repair) | other errors "
        "(first / after repair) | by CoT fallback (correct) | tokens/problem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["accuracy_ci95"]
        accuracy = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        rates = r["fol_error_rates"]
        parse = prover = other = "-"
        if rates is not None:
            first, after = rates["first_round"], rates["after_repair"]

            def both(key: str) -> str:
                return f"{_pct(first[key])} / {_pct(after[key])}"  # noqa: B023

            parse, prover, other = (
                both("parse_error_rate"),
                both("prover_error_rate"),
                both("other_error_rate"),
            )
        by = r.get("answered_by")
        fallback = "-" if not by else f"{by['fallback']} ({by['fallback_correct']})"
        lines.append(
            f"| {r['benchmark']} | {r['method']} | {r['problems']} | {accuracy} "
            f"[{100 * low:.1f}, {100 * high:.1f}] | {r['no_answer']} | {parse} | {prover} | "
            f"{other} | {fallback} | {r['tokens_per_problem']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=40, help="first N problems of each benchmark")
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    parser.add_argument("--k", type=int, default=5, help="translations per problem (vote)")
    parser.add_argument("--refine-rounds", type=int, default=1)
    parser.add_argument("--model", default=None, help="default: the embedded default model")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    parser.add_argument("--out", default="results/fol-comparison")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_sets = [o for o in args.set if o.startswith("model.")]
    model_sets += [f"model.name={args.model}"] if args.model else []
    model = build_config(EvalConfig, {}, model_sets).model
    generator, _ = load_generator(model)
    rows = []
    try:
        for benchmark in args.benchmarks.split(","):
            for index, method in enumerate(methods(args.k, args.refine_rounds)):
                folder = out / f"{benchmark}-{index}"
                config = build_config(
                    EvalConfig,
                    {},
                    [
                        f"benchmark={benchmark}",
                        f"limit={args.limit}",
                        f"out={folder}",
                        "progress=false",
                        *method.overrides,
                        *model_sets,
                        *(o for o in args.set if not o.startswith("model.")),
                    ],
                )
                summary = run_eval(config, generator=generator)
                rows.append(row(benchmark, method, summary, folder))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        generator.close()
    (out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "comparison.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
