"""Framework overhead: the same GSM8K prompts (n samples each) through the raw
`vllm.LLM.chat` and through `reasoner eval --strategy self-consistency`, side by side on one
engine, alternating rounds. Writes bench/results/overhead-<device>.json.

    python bench/overhead.py [--problems 32] [--n 8] [--max-tokens 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from reasoner.config import EvalConfig, build_config
from reasoner.models.config import ModelConfig
from reasoner.models.embedded import DEFAULT_MODEL
from reasoner.models.resolve import resolve_model
from reasoner.models.vllm_engine import VLLMGenerator
from reasoner.prompts import load_prompt
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.runner.evaluate import run_eval
from reasoner.runner.manifest import hardware, package_versions
from reasoner.strategies import problem_seed

RESULTS = Path(__file__).resolve().parent / "results"


def raw_engine_round(generator: VLLMGenerator, args: argparse.Namespace) -> dict[str, float]:
    """What a user of vLLM alone writes: the same chats, one `LLM.chat` call, same seeds."""
    from vllm import SamplingParams

    problems = load_dataset(load_manifest("gsm8k"), "test").problems[: args.problems]
    prompt = load_prompt("math_cot")
    started = time.perf_counter()
    chats: Any = [
        [{"role": m.role, "content": m.content} for m in prompt.render(problem)]
        for problem in problems
    ]
    params = [
        SamplingParams(
            n=args.n, temperature=0.7, max_tokens=args.max_tokens, seed=problem_seed(0, p.id)
        )
        for p in problems
    ]
    outputs = generator.llm.chat(chats, params, use_tqdm=False)
    wall = time.perf_counter() - started
    tokens = sum(len(o.token_ids) for out in outputs for o in out.outputs)
    return {"wall_s": wall, "completion_tokens": tokens, "tokens_per_s": tokens / wall}


def reasoner_round(
    generator: VLLMGenerator, args: argparse.Namespace, out: Path
) -> dict[str, float]:
    """`reasoner eval` end to end on the shared engine: rendering, generation, verification,
    majority vote, per-problem JSONL writes and the summary."""
    config = build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            "strategy.name=self-consistency",
            f"strategy.n={args.n}",
            "sampling.temperature=0.7",
            f"sampling.max_tokens={args.max_tokens}",
            f"limit={args.problems}",
            f"out={out}",
            "progress=false",
            f"model.name={args.model}",
        ],
    )
    started = time.perf_counter()
    summary = run_eval(config, generator=generator)
    wall = time.perf_counter() - started
    tokens = summary["tokens"]["completion"]
    return {
        "wall_s": wall,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "maj@n": summary["maj@k"][str(args.n)],
        "pass@1": summary["pass@k"]["1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    resolved = resolve_model(args.model)
    generator = VLLMGenerator(resolved.path, ModelConfig(name=args.model))
    device = "cpu" if generator.on_cpu else "gpu"
    raw_engine_round(generator, argparse.Namespace(**{**vars(args), "problems": 2}))  # warm-up
    rounds: dict[str, list[dict[str, float]]] = {"raw_vllm": [], "reasoner": []}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            generator.llm.reset_prefix_cache()
            rounds["raw_vllm"].append(raw_engine_round(generator, args))
            generator.llm.reset_prefix_cache()
            rounds["reasoner"].append(reasoner_round(generator, args, Path(tmp) / f"r{index}"))
            print(
                f"round {index}: raw {rounds['raw_vllm'][-1]['tokens_per_s']:.1f} tok/s, "
                f"reasoner {rounds['reasoner'][-1]['tokens_per_s']:.1f} tok/s",
                flush=True,
            )
    raw = statistics.median(r["tokens_per_s"] for r in rounds["raw_vllm"])
    ours = statistics.median(r["tokens_per_s"] for r in rounds["reasoner"])
    result = {
        "what": "completion tokens/s, reasoner eval (self-consistency) vs raw vllm.LLM.generate, "
        "same prompts, seeds and engine, prefix cache reset before each round",
        "ratio_reasoner_over_raw": ours / raw,
        "raw_vllm_tokens_per_s": raw,
        "reasoner_tokens_per_s": ours,
        "settings": {**vars(args), "temperature": 0.7, "dataset": "gsm8k test (first problems)"},
        "rounds": rounds,
        "model_path": resolved.path,
        "weights_sha256": resolved.sha256,
        "packages": package_versions(),
        "hardware": hardware(),
        "host": platform.node(),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"overhead-{device}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"reasoner / raw vLLM = {ours / raw:.3f}  ({ours:.1f} vs {raw:.1f} tokens/s) -> {path}")
    generator.close()


if __name__ == "__main__":
    main()
