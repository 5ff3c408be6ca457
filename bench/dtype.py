"""Generation throughput in float32 vs bfloat16, side by side on the machine it runs on, through
reasoner's vLLM generator (the same engine settings `reasoner eval` uses). One engine at a time:
start it in a dtype, warm it up, generate greedily for the same GSM8K prompts, close it, then
the other dtype. Records what `dtype: auto` picks here and the CPU flags it picks from.
Writes bench/results/dtype-<bf16|nobf16>-cpu.json (or dtype-gpu.json), after each dtype.

    python bench/dtype.py [--model qwen2.5-coder-0.5b-instruct] [--problems 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from reasoner.models.config import ModelConfig
from reasoner.models.dtype import DtypeChoice, read_cpu_flags, resolve_dtype
from reasoner.models.embedded import DEFAULT_MODEL
from reasoner.models.resolve import resolve_model
from reasoner.models.vllm_engine import VLLMGenerator
from reasoner.prompts import load_prompt
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.runner.manifest import hardware, package_versions
from reasoner.types import GenerationRequest, SamplingParams

RESULTS = Path(__file__).resolve().parent / "results"
ENV = ("OMP_", "VLLM_")


def requests(problems: int, max_tokens: int) -> list[GenerationRequest]:
    prompt = load_prompt("math_cot")
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    return [
        GenerationRequest(messages=prompt.render(p), sampling=sampling)
        for p in load_dataset(load_manifest("gsm8k"), "test").problems[:problems]
    ]


def measure(model: str, dtype: str, batch: list[GenerationRequest]) -> dict[str, Any]:
    """Engine start, then one batched greedy call over every prompt (after a one-prompt
    warm-up), in `dtype`."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    generator = VLLMGenerator(resolve_model(model).path, ModelConfig(name=model, dtype=dtype))
    start_s = time.perf_counter() - started
    try:
        generator.generate(batch[:1])  # warm-up: first-call allocations, kernel selection
        started = time.perf_counter()
        results = generator.generate(batch)
        wall = time.perf_counter() - started
    finally:
        generator.close()
    tokens = sum(c.completion_tokens for completions in results for c in completions)
    return {
        "dtype": dtype,
        "engine_start_s": start_s,
        "wall_s": wall,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--note", default="", help="recorded as is, e.g. what else was running")
    args = parser.parse_args()

    batch = requests(args.problems, args.max_tokens)
    auto = resolve_dtype("auto")
    cpu = "bf16" if auto.dtype == "bfloat16" else "nobf16"
    path = RESULTS / (f"dtype-{cpu}-cpu.json" if auto.device == "cpu" else "dtype-gpu.json")
    runs: list[dict[str, Any]] = []
    for dtype in args.dtypes:
        runs.append(measure(args.model, dtype, batch))
        print(f"{dtype}: {runs[-1]['tokens_per_s']:.1f} tokens/s", flush=True)
        write(path, args, auto, runs)  # after each dtype: a run cut short still leaves data
    print(f"dtype auto -> {auto.dtype} ({auto.reason}); wrote {path}")


def write(path: Path, args: argparse.Namespace, auto: DtypeChoice, runs: list[Any]) -> None:
    by_dtype = {r["dtype"]: r["tokens_per_s"] for r in runs}
    result = {
        "what": "greedy completion tokens/s of reasoner's vLLM generator, one engine per dtype, "
        "same GSM8K prompts (math_cot), after a one-prompt warm-up",
        "tokens_per_s": by_dtype,
        "bfloat16_over_float32": (
            by_dtype["bfloat16"] / by_dtype["float32"]
            if {"bfloat16", "float32"} <= set(by_dtype)
            else None
        ),
        "auto_resolves_to": auto.as_dict(),
        "runs": runs,
        "settings": {**vars(args), "dataset": "gsm8k test (first problems)", "temperature": 0},
        "cpu_flags": sorted(read_cpu_flags() or []),
        "cpu_model": _cpu_model(),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV)},
        "packages": package_versions(),
        "hardware": hardware(),
        "host": platform.node(),
    }
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


if __name__ == "__main__":
    main()
