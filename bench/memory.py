"""Peak memory and speed of inference, a zeroth-order (MeZO) step, a LoRA SFT step and a
full-weight Adam step, on the same model and the same batch, side by side in one run.

Each phase runs in a fresh subprocess, so no phase inherits another's allocations or allocator
caches. In the child the model is loaded first, then the peak is reset (Linux: `echo 5 >
/proc/self/clear_refs` resets the resident high-water mark that `ru_maxrss` reports; CUDA:
`torch.cuda.reset_peak_memory_stats`), so a phase's peak is the phase's own, not the loader's.
Reported: the peak resident set (`getrusage(RUSAGE_SELF).ru_maxrss`, CPU) or
`torch.cuda.max_memory_allocated` (GPU), the resident set after loading, and steps/s over the
steps after the first. MeZO's claim (Malladi et al., 2023): ZO needs about inference memory,
up to 12x less than Adam fine-tuning.

    python bench/memory.py [--model smollm2-135m-instruct] [--batch 8] [--max-length 384]
        [--steps 3] [--threads 1] [--phases inference,zo-full,zo-lora,sft-lora,adam-full]
        [--out bench/results/memory.json]

Writes (merges into) bench/results/memory.json, one entry per model and device.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("inference", "zo-full", "zo-lora", "sft-lora", "adam-full")
LORA = {"r": 8, "alpha": 16, "target_modules": "all-linear"}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _batch(args: argparse.Namespace, tokenizer: Any, device: Any) -> dict[str, Any]:
    """The first `batch` GSM8K training solutions (prompt rendered with the eval prompt), loss
    on the answer tokens: what the SFT and ZO stages train on."""
    from reasoner.training.data import sft_records_from_dataset
    from reasoner.training.tokens import collate, tokenize_records

    records = sft_records_from_dataset("gsm8k", "train", limit=args.batch)
    examples = tokenize_records(records, tokenizer, args.max_length)
    return collate(examples, int(tokenizer.pad_token_id), device)


def run_phase(args: argparse.Namespace) -> dict[str, Any]:
    """In the child: load, reset the peak, run the phase `steps` times, report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasoner.models.resolve import resolve_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    path = resolve_model(args.model).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype))
    model.to(device)
    batch = _batch(args, tokenizer, device)
    step = _phase_step(args.phase, model, batch)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    loaded_kib = _status_kib("VmRSS")
    reset = _reset_peak()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        loss = step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    timed = times[1:] or times
    result: dict[str, Any] = {
        "phase": args.phase,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_reset_after_load": reset,
        "rss_after_load_mib": loaded_kib / 1024,
        "steps_per_s": len(timed) / sum(timed),
        "step_s": times,
        "loss": loss,
        "tokens_in_batch": int(batch["attention_mask"].sum()),
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)
        if args.phase in ("sft-lora", "adam-full")
        else None,
    }
    result["peak_over_load_mib"] = result["peak_rss_mib"] - result["rss_after_load_mib"]
    if cuda:
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_allocated_after_load_mib"] = None  # reset above; see peak
    return result


def _phase_step(phase: str, model: Any, batch: dict[str, Any]) -> Any:
    """A callable that runs one step of `phase` and returns its loss."""
    import torch

    from reasoner.training.config import LoraSettings
    from reasoner.training.policy import lora_config
    from reasoner.training.tokens import lm_loss
    from reasoner.training.zo import MeZO, step_seed

    if phase == "inference":
        model.eval()
        return lambda: lm_loss(model, batch)
    if phase in ("zo-full", "zo-lora"):
        if phase == "zo-lora":
            from peft import get_peft_model

            model = get_peft_model(model, lora_config(LoraSettings.model_validate(LORA)))
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        else:
            named = list(model.named_parameters())
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        eps = 1e-2 if phase == "zo-lora" else 1e-3
        mezo = MeZO(named, eps=eps)
        counter = {"step": 0}

        def zo_step() -> float:
            counter["step"] += 1
            est = mezo.estimate(lambda: lm_loss(model, batch), step_seed(0, counter["step"]))
            mezo.update([est], lr=1e-6)
            return est.loss

        return zo_step
    if phase == "sft-lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(LoraSettings.model_validate(LORA)))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def backprop_step() -> float:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return backprop_step


def _child(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        phase,
        "--model",
        args.model,
        "--batch",
        str(args.batch),
        "--max-length",
        str(args.max_length),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--dtype",
        args.dtype,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--out", default=str(RESULTS / "memory.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dtype is None:
        import torch

        args.dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    if args.child:
        args.phase = args.child
        print(json.dumps(run_phase(args)))
        return

    from reasoner.runner.manifest import hardware, package_versions

    phases: dict[str, dict[str, Any]] = {}
    for phase in args.phases.split(","):
        phases[phase] = _child(args, phase)
        r = phases[phase]
        print(
            f"{phase:10s} peak {r['peak_rss_mib']:8.0f} MiB (load {r['rss_after_load_mib']:.0f}, "
            f"+{r['peak_over_load_mib']:.0f})  {r['steps_per_s']:.3f} steps/s",
            flush=True,
        )
    import torch

    device = "gpu" if torch.cuda.is_available() else "cpu"
    key = "cuda_max_allocated_mib" if device == "gpu" else "peak_rss_mib"

    def ratio(a: str, b: str) -> float | None:
        if a in phases and b in phases:
            return phases[a][key] / phases[b][key]
        return None

    ratios = {
        "zo_full_over_inference": ratio("zo-full", "inference"),
        "zo_lora_over_inference": ratio("zo-lora", "inference"),
        "sft_lora_over_inference": ratio("sft-lora", "inference"),
        "adam_full_over_inference": ratio("adam-full", "inference"),
        "adam_full_over_zo_full": ratio("adam-full", "zo-full"),
    }
    zo_inf, adam_zo = ratios["zo_full_over_inference"], ratios["adam_full_over_zo_full"]
    result = {
        "what": f"peak memory ({key}) and steps/s per phase, same model and batch, one "
        "subprocess per phase, peak reset after loading",
        "targets": {
            "zo_full_peak_at_most_1.1x_inference": None if zo_inf is None else zo_inf <= 1.1,
            "adam_full_at_least_3x_zo_full": None if adam_zo is None else adam_zo >= 3.0,
        },
        "ratios": ratios,
        "phases": phases,
        "settings": {k: v for k, v in vars(args).items() if k not in ("child", "phase", "out")},
        "lora": LORA,
        "packages": package_versions(),
        "hardware": hardware(),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing[f"{args.model}/{device}"] = result
    path.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
