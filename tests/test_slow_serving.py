"""`reasoner serve` in front of the real vLLM engine (the shared `vllm_generator`), over real
HTTP on loopback with the `openai` client: answers equal the engine's own, usage counts match,
concurrent requests decode in shared batches, and a timed-out request leaves the engine clean."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from _counting_generator import CountingGenerator

from reasoner.models.batching import BatchingGenerator
from reasoner.serving.answers import CHAT_PROMPT, ReferenceFreeVerifier
from reasoner.serving.app import create_app
from reasoner.serving.service import ServeSettings
from reasoner.strategies import StrategyConfig, load_strategy
from reasoner.types import ChatMessage, GenerationRequest, Problem, SamplingParams
from reasoner.verifiers import load as load_verifier

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving `app` on a free loopback port, in a thread of this test process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="module")
def served(vllm_generator: Any) -> Iterator[tuple[ServerThread, Any]]:
    app = create_app(vllm_generator, ServeSettings(served_model_name=MODEL))
    assert app.state.batching.mode == "continuous"
    with ServerThread(app) as server:
        yield server, app
    assert not vllm_generator.llm.llm_engine.has_unfinished_requests()


@pytest.fixture(scope="module")
def client(served: tuple[ServerThread, Any]) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=served[0].base_url, api_key="none", max_retries=0)


def _chat(question: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_greedy_answer_equals_the_engines_own(client: Any, vllm_generator: Any) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=_chat(), max_tokens=48)
    direct = vllm_generator.generate(
        [
            GenerationRequest(
                messages=(ChatMessage("user", QUESTION),),
                sampling=SamplingParams(temperature=0.0, max_tokens=48),
            )
        ]
    )[0][0]
    assert reply.choices[0].message.content == direct.text
    assert reply.choices[0].finish_reason == direct.finish_reason
    assert reply.usage.prompt_tokens == direct.prompt_tokens
    assert reply.usage.completion_tokens == direct.completion_tokens > 0
    assert reply.usage.total_tokens == direct.prompt_tokens + direct.completion_tokens


def test_self_consistency_equals_the_strategy_run_directly(
    client: Any, vllm_generator: Any
) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=_chat(),
        max_tokens=48,
        seed=5,
        extra_body={"strategy": "self-consistency", "n": 4, "verifier": "math"},
    )
    extra = reply.model_extra["reasoner"]
    assert extra["samples"] == 4 and extra["seed"] == 5 and extra["engine_calls"] == 1
    verifier = load_verifier("math")
    try:
        (trace,) = load_strategy("self-consistency").run(
            [
                Problem(
                    id="chat",
                    question=QUESTION,
                    metadata={"chat": (ChatMessage("user", QUESTION),)},
                )
            ],
            vllm_generator,
            ReferenceFreeVerifier(verifier),
            StrategyConfig(
                CHAT_PROMPT, SamplingParams(temperature=0.7, max_tokens=48), n=4, seed=5
            ),
        )
    finally:
        verifier.close()
    assert extra["prediction"] == trace.prediction
    assert reply.usage.completion_tokens == trace.usage.completion_tokens
    assert reply.usage.prompt_tokens == trace.usage.prompt_tokens
    texts = [c.text for c in trace.steps[0].completions]
    assert reply.choices[0].message.content in texts


def test_streamed_answer_equals_the_plain_one(client: Any) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=_chat(), max_tokens=32)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=_chat(),
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_concurrent_requests_decode_together(client: Any, served: tuple[ServerThread, Any]) -> None:
    batching: BatchingGenerator = served[1].state.batching
    before = batching.stats.peak_in_flight
    batching.stats.peak_in_flight = 0
    questions = [f"What is {i} times {i + 2}?" for i in range(8)]
    with ThreadPoolExecutor(len(questions)) as pool:
        replies = list(
            pool.map(
                lambda q: client.chat.completions.create(
                    model=MODEL, messages=_chat(q), max_tokens=24
                ),
                questions,
            )
        )
    assert all(r.choices[0].message.content and r.usage.completion_tokens > 0 for r in replies)
    assert batching.stats.peak_in_flight > 1, "requests should share engine steps"
    batching.stats.peak_in_flight = max(before, batching.stats.peak_in_flight)


def test_concurrent_self_consistency_requests_share_engine_calls(vllm_generator: Any) -> None:
    """In front of a Generator without an enqueue/step API the server micro-batches: the
    counting wrapper sees fewer engine calls than requests."""
    counting = CountingGenerator(vllm_generator)
    app = create_app(counting, ServeSettings(served_model_name=MODEL, batch_window_ms=50))
    assert app.state.batching.mode == "micro-batch"
    requests = 6
    with ServerThread(app) as server, ThreadPoolExecutor(requests) as pool:
        body = {
            "model": MODEL,
            "max_tokens": 24,
            "strategy": "self-consistency",
            "n": 3,
            "seed": 1,
        }
        replies = list(
            pool.map(
                lambda i: httpx.post(
                    f"{server.base_url}/chat/completions",
                    json={**body, "messages": _chat(f"What is {i} plus {i}?")},
                    timeout=600,
                ),
                range(requests),
            )
        )
    assert [r.status_code for r in replies] == [200] * requests
    assert all(r.json()["usage"]["completion_tokens"] > 0 for r in replies)
    assert sum(counting.calls) == requests
    assert len(counting.calls) < requests, f"engine calls: {counting.calls}"


def test_a_timed_out_request_is_504_and_leaves_the_engine_clean(
    served: tuple[ServerThread, Any], vllm_generator: Any
) -> None:
    server = served[0]
    late = httpx.post(
        f"{server.base_url}/chat/completions",
        json={
            "model": MODEL,
            "messages": _chat("Count from 1 to 500, one number per line."),
            "max_tokens": 1000,
            "timeout": 0.01,
        },
        timeout=120,
    )
    assert late.status_code == 504 and late.json()["error"]["param"] == "timeout"
    engine = vllm_generator.llm.llm_engine
    deadline = time.monotonic() + 60
    while engine.has_unfinished_requests():
        assert time.monotonic() < deadline, "the timed-out request is still decoding"
        time.sleep(0.05)
    after = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": MODEL, "messages": _chat(), "max_tokens": 8},
        timeout=300,
    )
    assert after.status_code == 200


def test_a_client_that_disconnects_cancels_its_engine_requests(
    served: tuple[ServerThread, Any], vllm_generator: Any
) -> None:
    """The client's socket closes while its n=8 request decodes: the server aborts the engine
    request instead of decoding 8 x 1000 tokens for nobody."""
    server, app = served
    body = json.dumps(
        {
            "model": MODEL,
            "messages": _chat("Count from 1 to 500, one number per line."),
            "max_tokens": 1000,
            "strategy": "self-consistency",
            "n": 8,
        }
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    engine = vllm_generator.llm.llm_engine
    aborted = app.state.batching.stats.aborted
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(head + body)
        deadline = time.monotonic() + 120
        while not engine.has_unfinished_requests():
            assert time.monotonic() < deadline, "the request never reached the engine"
            time.sleep(0.01)
    deadline = time.monotonic() + 60
    while engine.has_unfinished_requests():
        assert time.monotonic() < deadline, "the abandoned request is still decoding"
        time.sleep(0.05)
    assert app.state.batching.stats.aborted > aborted


def test_the_serve_command_end_to_end() -> None:
    """`python -m reasoner.serving` (what `reasoner serve` runs, on vLLM's AsyncLLM): loads
    the engine, answers, times out, and on SIGTERM shuts down with its engine processes."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reasoner.serving",
            "--model",
            MODEL,
            "--port",
            str(port),
            "--max-model-len",
            "1024",
            "--set",
            "model.kv_cache_gb=1",
            "--set",
            "model.dtype=float32",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "reasoner serve did not become healthy"
            time.sleep(1)
        models = httpx.get(base + "/v1/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        reply = httpx.post(
            base + "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": _chat(),
                "max_tokens": 32,
                "strategy": "self-consistency",
                "n": 2,
                "seed": 3,
            },
            timeout=600,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["reasoner"]["samples"] == 2
        assert reply.json()["usage"]["completion_tokens"] > 0
        late = httpx.post(
            base + "/v1/chat/completions",
            json={"model": MODEL, "messages": _chat(), "max_tokens": 1000, "timeout": 0.01},
            timeout=120,
        )
        assert late.status_code == 504
        again = httpx.post(
            base + "/v1/chat/completions",
            json={"model": MODEL, "messages": _chat(), "max_tokens": 8},
            timeout=600,
        )
        assert again.status_code == 200
        process.send_signal(signal.SIGTERM)  # the server alone: it must stop its engine
        assert process.wait(timeout=120) == 0
        output = process.stdout.read().decode()  # type: ignore[union-attr]
        assert "reasoner serve: stopped" in output, output[-3000:]
        deadline = time.monotonic() + 60
        while True:  # the engine's own processes went with it
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "engine processes outlived the server"
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_an_adapter_in_front_of_the_engine_keeps_continuous_batching(vllm_generator: Any) -> None:
    """`model.adapter` wraps the engine in an AdapterGenerator; the batcher still steps the
    engine itself and still puts the adapter on every request (the adapter does not exist, so
    the engine refuses the request, to the caller that sent it; without the adapter the same
    request succeeds)."""
    from reasoner.errors import ModelError
    from reasoner.models.adapter import AdapterGenerator

    batching = BatchingGenerator(AdapterGenerator(vllm_generator, "/no/such/adapter"))
    try:
        assert batching.mode == "continuous"
        request = GenerationRequest(
            messages=(ChatMessage("user", QUESTION),), sampling=SamplingParams(max_tokens=4)
        )
        with pytest.raises(ModelError, match="adapter"):
            batching.generate([request])
        plain = BatchingGenerator(vllm_generator)
        try:
            assert plain.generate([request])[0][0].completion_tokens > 0
        finally:
            plain.close()
    finally:
        batching.close()
    assert not vllm_generator.llm.llm_engine.has_unfinished_requests()


@pytest.fixture(scope="module")
def async_engine(test_model_path: Any) -> Iterator[Any]:
    from reasoner.models.config import ModelConfig
    from reasoner.serving.async_vllm import AsyncVLLMGenerator

    engine = AsyncVLLMGenerator(
        str(test_model_path),
        ModelConfig(name=MODEL, max_model_len=2048, kv_cache_gb=1, dtype="float32"),
    )
    yield engine
    engine.close()


def test_the_async_engine_answers_as_the_llm_engine_does(
    async_engine: Any, vllm_generator: Any
) -> None:
    """`reasoner serve`'s engine (AsyncLLM) and `reasoner eval`'s (vllm.LLM) give the same
    greedy and seeded samples for the same request."""
    requests = [
        GenerationRequest(
            messages=(ChatMessage("user", QUESTION),),
            sampling=SamplingParams(max_tokens=48),
        ),
        GenerationRequest(
            messages=(ChatMessage("user", QUESTION),),
            sampling=SamplingParams(n=3, temperature=0.8, max_tokens=32, seed=7),
        ),
    ]
    for request in requests:
        ours = async_engine.generate([request])[0]
        theirs = vllm_generator.generate([request])[0]
        assert [c.text for c in ours] == [c.text for c in theirs]
        assert [c.completion_tokens for c in ours] == [c.completion_tokens for c in theirs]
        assert ours[0].prompt_tokens == theirs[0].prompt_tokens


def test_the_async_engine_serves_many_threads_and_aborts_on_cancel(async_engine: Any) -> None:
    from reasoner.models.batching import Cancelled, CancelToken, cancel_scope

    def ask(i: int) -> list[Any]:
        request = GenerationRequest(
            messages=(ChatMessage("user", f"Write the number {i} in words."),),
            sampling=SamplingParams(max_tokens=16),
        )
        return async_engine.generate([request, request])

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(ask, range(6)))
    assert all(len(r) == 2 and r[0][0].text == r[1][0].text for r in replies)
    assert all(r[0][0].completion_tokens > 0 for r in replies)

    token = CancelToken()

    def cancel_once_decoding() -> None:
        deadline = time.monotonic() + 300
        while not async_engine.in_flight() and time.monotonic() < deadline:
            time.sleep(0.001)
        token.cancel("too slow")

    threading.Thread(target=cancel_once_decoding, daemon=True).start()
    long = GenerationRequest(
        messages=(ChatMessage("user", "Count from 1 to 500, one number per line."),),
        sampling=SamplingParams(max_tokens=1500),
    )
    with cancel_scope(token), pytest.raises(Cancelled, match="too slow"):
        async_engine.generate([long])
    deadline = time.monotonic() + 60
    while async_engine.in_flight():
        assert time.monotonic() < deadline, "the cancelled request is still decoding"
        time.sleep(0.05)
