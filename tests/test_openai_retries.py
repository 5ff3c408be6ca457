"""Retry and concurrency behaviour of the OpenAI backend, against a local HTTP server that fails
on purpose (the real-server test is in the slow tier: test_slow_eval.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reasoner.errors import ModelError
from reasoner.models.config import ModelConfig
from reasoner.models.openai_server import OpenAIServerGenerator
from reasoner.types import GenerationRequest, SamplingParams


class FlakyServer(ThreadingHTTPServer):
    """Answers 503 to the first `failures` requests, then a completion; tracks concurrency."""

    def __init__(self, failures: int, status: int = 503) -> None:
        super().__init__(("127.0.0.1", 0), FlakyHandler)
        self.failures, self.status = failures, status
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0


class FlakyHandler(BaseHTTPRequestHandler):
    server: FlakyServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
            failing = self.server.requests <= self.server.failures
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        time.sleep(0.05)
        with self.server.lock:
            self.server.in_flight -= 1
        if failing:
            self._send(self.server.status, {"error": "busy"})
            return
        choices = [
            {"index": i, "text": f"{body['prompt']}!{i}", "finish_reason": "length"}
            for i in range(body.get("n", 1))
        ]
        self._send(
            200,
            {
                "choices": choices,
                "usage": {"prompt_tokens": 3, "completion_tokens": 2 * len(choices)},
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(server: FlakyServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyServer, str]]:
    server = FlakyServer(failures=2)
    for url in _serve(server):
        yield server, url


def _generator(url: str, **overrides: Any) -> OpenAIServerGenerator:
    return OpenAIServerGenerator(ModelConfig(name="m", backend="openai", base_url=url, **overrides))


def test_retries_transient_failures_then_succeeds(flaky: tuple[FlakyServer, str]) -> None:
    server, url = flaky
    out = _generator(url).generate(
        [GenerationRequest(prompt="hi", sampling=SamplingParams(n=2, max_tokens=2))]
    )
    assert [c.text for c in out[0]] == ["hi!0", "hi!1"]
    assert out[0][0].completion_tokens == 2 and out[0][0].prompt_tokens == 3
    assert server.requests == 3


def test_gives_up_with_a_clear_error(flaky: tuple[FlakyServer, str]) -> None:
    _, url = flaky
    with pytest.raises(ModelError, match=r"failed after 2 attempts: HTTP 503"):
        _generator(url, max_retries=1).generate([GenerationRequest(prompt="hi")])


def test_client_errors_are_not_retried() -> None:
    server = FlakyServer(failures=5, status=400)
    for url in _serve(server):
        with pytest.raises(ModelError, match="refused the request: HTTP 400"):
            _generator(url).generate([GenerationRequest(prompt="hi")])
        assert server.requests == 1


def test_concurrency_limit_is_respected() -> None:
    server = FlakyServer(failures=0)
    for url in _serve(server):
        requests = [GenerationRequest(prompt=str(i)) for i in range(12)]
        out = _generator(url, max_concurrency=3).generate(requests)
        assert [r[0].text for r in out] == [f"{i}!0" for i in range(12)]
        assert 1 < server.max_in_flight <= 3


def test_unreachable_server_is_reported() -> None:
    generator = _generator("http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(ModelError, match="ConnectError"):
        generator.generate([GenerationRequest(prompt="hi")])
