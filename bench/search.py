"""Batching and prefix caching in tree search, on the real vLLM engine.

The same beam search and MCTS (the LLM judge scoring steps with the same engine) run on the
first GSM8K problems four ways: batched as reasoner issues them (one engine call per search
round for all problems and nodes) or one prompt at a time (a wrapper that sends each request
as its own engine call, as a per-node search loop would), each with prefix caching on and off
(two engines, started one after the other). Reported per strategy: tokens/s (generated, by
the search and the judge, over wall time), the batched / one-at-a-time ratio, and the prefix
cache hit rate (prompt tokens served from the cache / prompt tokens). Writes
bench/results/search-<device>.json.

    python bench/search.py [--model qwen2.5-coder-0.5b-instruct] [--problems 8]
    python bench/search.py --model smollm2-135m-instruct --problems 2 --max-tokens 24 --tiny
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasoner.models.base import Generator
from reasoner.models.config import ModelConfig
from reasoner.models.embedded import DEFAULT_MODEL
from reasoner.models.resolve import resolve_model
from reasoner.models.vllm_engine import VLLMGenerator
from reasoner.prompts import load_prompt
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.runner.manifest import hardware, package_versions
from reasoner.strategies.base import Strategy, StrategyConfig
from reasoner.strategies.beam_search import BeamSearch
from reasoner.strategies.mcts import MCTS
from reasoner.types import ChatMessage, Completion, GenerationRequest, SamplingParams
from reasoner.verifiers import load as load_verifier

RESULTS = Path(__file__).resolve().parent / "results"


class Metered(Generator):
    """Counts engine calls and tokens of everything sent through it (the search and the
    judge); `one_at_a_time` sends every request as its own engine call."""

    def __init__(self, inner: Generator, one_at_a_time: bool) -> None:
        self.inner = inner
        self.one_at_a_time = one_at_a_time
        self.description = inner.description
        self.calls = self.requests = 0
        self.prompt_tokens = self.cached_tokens = self.completion_tokens = 0

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return self.inner.render_chat(messages)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        if self.one_at_a_time:
            results = [self.inner.generate([request])[0] for request in requests]
            self.calls += len(requests)
        else:
            results = self.inner.generate(requests)
            self.calls += 1 if requests else 0
        self.requests += len(requests)
        for completions in results:
            if completions:
                self.prompt_tokens += completions[0].prompt_tokens
                self.cached_tokens += completions[0].cached_prompt_tokens
            self.completion_tokens += sum(c.completion_tokens for c in completions)
        return results


def strategies(args: argparse.Namespace) -> dict[str, tuple[Strategy, int, dict[str, Any]]]:
    """name -> (strategy, strategy.n, options)"""
    return {
        "beam-search": (
            BeamSearch(),
            args.beams,
            {"beam_width": args.beam_width, "max_depth": args.max_depth},
        ),
        "mcts": (
            MCTS(),
            1,
            {
                "simulations": args.simulations,
                "expand_k": args.expand_k,
                "max_depth": args.max_depth,
                "leaves_per_tree": args.leaves_per_tree,
            },
        ),
    }


def one_run(
    engine: VLLMGenerator,
    name: str,
    args: argparse.Namespace,
    one_at_a_time: bool,
) -> dict[str, Any]:
    strategy, n, options = strategies(args)[name]
    problems = load_dataset(load_manifest("gsm8k"), "test").problems[: args.problems]
    metered = Metered(engine, one_at_a_time)
    judge = load_verifier(
        "judge", generator=metered, prompt="step_judge", max_tokens=args.judge_tokens
    )
    config = StrategyConfig(
        load_prompt("math_cot"),
        SamplingParams(temperature=0.8, max_tokens=args.max_tokens),
        n=n,
        seed=0,
        options=options,
        scorer=judge,
    )
    engine.llm.reset_prefix_cache()
    with load_verifier("math") as verifier:
        started = time.perf_counter()
        traces = strategy.run(problems, metered, verifier, config)
        wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "engine_calls": metered.calls,
        "requests": metered.requests,
        "completion_tokens": metered.completion_tokens,
        "prompt_tokens": metered.prompt_tokens,
        "cached_prompt_tokens": metered.cached_tokens,
        "tokens_per_s": metered.completion_tokens / wall,
        "prefix_cache_hit_rate": metered.cached_tokens / metered.prompt_tokens
        if metered.prompt_tokens
        else 0.0,
        "search_rounds": max(t.usage.engine_calls for t in traces),
        "tree_nodes": sum(len(t.tree) for t in traces),
        "correct": sum(t.verdict.is_correct for t in traces),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--strategies", default="beam-search,mcts")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per step")
    parser.add_argument("--judge-tokens", type=int, default=24)
    parser.add_argument("--max-depth", type=int, default=4)
    parser.add_argument("--beams", type=int, default=4, help="beam search: N")
    parser.add_argument("--beam-width", type=int, default=2, help="beam search: M")
    parser.add_argument("--simulations", type=int, default=4, help="MCTS")
    parser.add_argument("--expand-k", type=int, default=2, help="MCTS")
    parser.add_argument("--leaves-per-tree", type=int, default=1, help="MCTS")
    parser.add_argument("--caching", default="on,off", help="prefix caching settings to run")
    parser.add_argument("--tiny", action="store_true", help="a smoke-test size (1 sim, depth 2)")
    parser.add_argument("--out", help="result file (default bench/results/search-<device>.json)")
    args = parser.parse_args()
    if args.tiny:
        args.max_depth, args.simulations, args.beams = 2, 1, 2

    resolved = resolve_model(args.model)
    names = [s for s in args.strategies.split(",") if s]
    results: dict[str, dict[str, Any]] = {name: {} for name in names}
    device = "cpu"
    for caching in [c for c in args.caching.split(",") if c]:
        engine = VLLMGenerator(
            resolved.path,
            ModelConfig(name=args.model, enable_prefix_caching=caching == "on", kv_cache_gb=2),
        )
        device = "cpu" if engine.on_cpu else "gpu"
        try:
            for name in names:
                row = {
                    "batched": one_run(engine, name, args, one_at_a_time=False),
                    "one_at_a_time": one_run(engine, name, args, one_at_a_time=True),
                }
                row["ratio_batched_over_one_at_a_time"] = (
                    row["batched"]["tokens_per_s"] / row["one_at_a_time"]["tokens_per_s"]
                )
                results[name][f"prefix_caching_{caching}"] = row
                print(
                    f"{name}, prefix caching {caching}: batched "
                    f"{row['batched']['tokens_per_s']:.1f} tok/s in "
                    f"{row['batched']['engine_calls']} calls, one at a time "
                    f"{row['one_at_a_time']['tokens_per_s']:.1f} tok/s in "
                    f"{row['one_at_a_time']['engine_calls']} calls: "
                    f"x{row['ratio_batched_over_one_at_a_time']:.2f}; cache hit rate "
                    f"{row['batched']['prefix_cache_hit_rate']:.2f}",
                    flush=True,
                )
        finally:
            engine.close()
    for runs in results.values():
        on, off = runs.get("prefix_caching_on"), runs.get("prefix_caching_off")
        if on and off:
            runs["batched_cache_on_over_off"] = (
                on["batched"]["tokens_per_s"] / off["batched"]["tokens_per_s"]
            )
    result = {
        "what": "tree search (judge-scored steps, same engine) batched (one engine call per "
        "search round) vs one request per engine call, with prefix caching on and off; "
        "tokens/s = tokens generated by search and judge / wall time",
        "target": "batched >= 5x one-at-a-time",
        "settings": {**vars(args), "temperature": 0.8, "dataset": "gsm8k test (first problems)"},
        "results": results,
        "model_path": resolved.path,
        "weights_sha256": resolved.sha256,
        "packages": package_versions(),
        "hardware": hardware(),
        "host": platform.node(),
    }
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / f"search-{device}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
