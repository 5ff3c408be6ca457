"""How long `make demo` takes after install, side by side in one run: the demo's own command
(`reasoner eval gsm8k --model qwen2.5-coder-0.5b-instruct --limit 50`) as this machine runs it
(`dtype: auto`), and under an AVX2-only proxy.

The proxy is for the 2-core AVX2-only CPUs many users have (issue 16 measured one: 70 tokens/s in
float32, bf16 over 10x slower). It runs what `dtype: auto` picks there (float32) and restricts
torch's kernels (`ATEN_CPU_CAPABILITY=avx2`) and oneDNN's (`ONEDNN_MAX_CPU_ISA=AVX2`) to AVX2.
vLLM's own CPU kernels keep the instruction set they were built for, so the proxy is an
estimate, not that machine: the figure to trust is the real one when a user reports it.

Each setting is one fresh `reasoner eval` process, timed from launch to exit (engine start
included), with the summary's generation time and tokens/s. Writes
bench/results/demo-cpu.json with the CPU flags.

    python bench/demo.py [--limit 50] [--settings auto,avx2-proxy]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from reasoner.models.dtype import read_cpu_flags, resolve_dtype
from reasoner.runner.manifest import hardware, package_versions

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "qwen2.5-coder-0.5b-instruct"
SETTINGS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "auto": ({}, ()),
    "avx2-proxy": (
        {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
        ("--set", "model.dtype=float32"),
    ),
}


def run_demo(name: str, limit: int, folder: Path) -> dict[str, Any]:
    env_extra, flags = SETTINGS[name]
    out = folder / name
    command = [
        *(sys.executable, "-m", "reasoner.cli", "eval", "gsm8k", "--model", MODEL),
        *("--limit", str(limit), "--no-progress", "--out", str(out), *flags),
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command, env={**os.environ, **env_extra}, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "setting": name,
        "env": env_extra,
        "flags": list(flags),
        "dtype": manifest["dtype"]["dtype"],
        "torch_cpu_capability": manifest["dtype"]["cpu_capability"],
        "problems": summary["problems"],
        "accuracy": summary["accuracy"],
        "wall_s": round(wall, 1),
        "generate_wall_s": round(summary["timing"]["generate_wall_s"], 1),
        "completion_tokens": summary["tokens"]["completion"],
        "completion_tokens_per_s": round(summary["timing"]["completion_tokens_per_s"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", type=Path, default=RESULTS / "demo-cpu.json")
    args = parser.parse_args()
    flags = read_cpu_flags()
    rows = []
    with tempfile.TemporaryDirectory(prefix="reasoner-demo-") as folder:
        for name in args.settings.split(","):
            rows.append(run_demo(name, args.limit, Path(folder)))
            print(json.dumps(rows[-1]), flush=True)
    if len(rows) == 2:
        rows.append({"wall_ratio": round(rows[1]["wall_s"] / rows[0]["wall_s"], 2)})
    record = {
        "command": f"reasoner eval gsm8k --model {MODEL} --limit {args.limit}",
        "cpu_flags": sorted(flags) if flags else None,
        "auto_dtype_here": resolve_dtype("auto").as_dict(),
        "hardware": hardware(),
        "packages": package_versions(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
