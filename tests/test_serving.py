"""`reasoner serve`'s HTTP layer: request validation, /v1/models, the response and streaming
formats, timeouts and the batching of concurrent requests.

Generation here comes from `ScriptedGenerator`, a stand-in whose replies are fixed by the test
(it tests the HTTP layer, not generation); tests/test_slow_serving.py runs the real engine.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reasoner.models.base import Generator
from reasoner.models.batching import (
    BatchingGenerator,
    Cancelled,
    CancelToken,
    cancel_scope,
    drain_results,
)
from reasoner.serving.app import create_app, split_for_stream
from reasoner.serving.service import ServeSettings
from reasoner.types import Completion, GenerationRequest, SamplingParams

MODEL = "scripted-model"
Script = Callable[[GenerationRequest, int], str]


def _last_user(request: GenerationRequest) -> str:
    assert request.messages is not None
    return [m.content for m in request.messages if m.role == "user"][-1]


class ScriptedGenerator(Generator):
    """Replies chosen by a script (request, sample index) -> text; token counts are word
    counts. `gate`, when given, holds every engine call until the test sets it."""

    description = "scripted:test"

    def __init__(self, script: Script, gate: threading.Event | None = None) -> None:
        self.script = script
        self.gate = gate
        self.calls: list[int] = []
        self.requests: list[GenerationRequest] = []
        self.entered = threading.Event()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.calls.append(len(requests))
        self.requests.extend(requests)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        results = []
        for request in requests:
            prompt_words = sum(len(m.content.split()) for m in request.messages or ())
            texts = [self.script(request, i) for i in range(request.sampling.n)]
            results.append(
                [
                    Completion(
                        text=text,
                        finish_reason="stop",
                        prompt_tokens=prompt_words,
                        completion_tokens=len(text.split()),
                    )
                    for text in texts
                ]
            )
        return results


def echo(request: GenerationRequest, index: int) -> str:
    return f"You said: {_last_user(request)} The answer is 7."


def votes(request: GenerationRequest, index: int) -> str:
    """Self-consistency fodder: samples 1, 3 and 4 say 5, samples 0 and 2 say 3."""
    answer = 5 if index in (1, 3, 4) else 3
    return f"Sample {index} reasons a while. The answer is {answer}."


def _settings(**extra: Any) -> ServeSettings:
    return ServeSettings(served_model_name=MODEL, aliases=["alias-model"], **extra)


@pytest.fixture
def scripted() -> ScriptedGenerator:
    return ScriptedGenerator(echo)


@pytest.fixture
def client(scripted: ScriptedGenerator) -> Iterator[TestClient]:
    with TestClient(create_app(scripted, _settings())) as c:
        yield c


def _chat(content: str = "What is 3 + 4?", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


# -- /v1/models ----------------------------------------------------------------------------
def test_models_lists_the_served_names(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL, "alias-model"]
    assert body["data"][0]["root"] == "scripted:test"
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    missing = client.get("/v1/models/other")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": MODEL}, "messages", "Field required"),
        (_chat(stratgy="self-consistency"), "stratgy", "unknown field"),
        (
            {"model": MODEL, "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
            "",
        ),
        (_chat(temperature=3), "temperature", "less than or equal to 2"),
        (_chat(n=0), "n", "greater than or equal to 1"),
        (_chat(n=65, strategy="self-consistency"), "n", "at most 64"),
        (_chat(n=3), "n", "greedy strategy takes n=1"),
        (_chat(strategy="beam-me-up"), "strategy", "self-consistency"),
        (_chat(verifier="nope"), "verifier", "math"),
        (_chat(verifier="unit-tests"), "verifier", "reference"),
        (_chat(scorer="nope"), "scorer", "unknown scorer"),
        (_chat(prompt="no-such-prompt"), "prompt", "math_cot"),
        ({**_chat(), "model": "gpt-4"}, "model", MODEL),
        (_chat(tools=[{"type": "function"}]), "tools", "not supported"),
        (_chat(presence_penalty=0.5), "presence_penalty", "not supported"),
        (_chat(stop=[""]), "stop", "empty"),
        (_chat(timeout=-1), "timeout", "greater than 0"),
        (
            {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}]},
            "messages",
            "user message",
        ),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": [{"type": "image_url", "x": 1}]}],
            },
            "messages[0].content",
            "",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    client: TestClient, scripted: ScriptedGenerator, body: dict[str, Any], param: str, words: str
) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert words in error["message"]
    assert scripted.calls == [], "a refused request must not reach the engine"


def test_a_body_that_is_not_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


# -- answers -------------------------------------------------------------------------------
def test_greedy_reply_with_usage(client: TestClient, scripted: ScriptedGenerator) -> None:
    response = client.post("/v1/chat/completions", json=_chat(max_tokens=32, seed=1))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "You said: What is 3 + 4? The answer is 7.",
    }
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 5  # the words of "What is 3 + 4?", sent as is
    assert body["usage"]["completion_tokens"] == 11
    assert body["usage"]["total_tokens"] == 16
    assert body["reasoner"]["prediction"] == "7" and body["reasoner"]["strategy"] == "greedy"
    (request,) = scripted.requests
    assert request.sampling.temperature == 0.0 and request.sampling.max_tokens == 32
    assert request.sampling.n == 1


def test_the_chat_is_sent_as_is_and_developer_is_system(
    client: TestClient, scripted: ScriptedGenerator
) -> None:
    messages = [
        {"role": "developer", "content": "Answer in one line."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
    ]
    response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    assert response.status_code == 200
    sent = scripted.requests[0].messages
    assert sent is not None
    assert [(m.role, m.content) for m in sent] == [
        ("system", "Answer in one line."),
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "What is 2+2?"),
    ]


def test_a_named_prompt_wraps_the_question(client: TestClient, scripted: ScriptedGenerator) -> None:
    response = client.post("/v1/chat/completions", json=_chat("What is 6 * 7?", prompt="math_cot"))
    assert response.status_code == 200
    from reasoner.prompts import load_prompt
    from reasoner.types import Problem

    expected = load_prompt("math_cot").render(Problem(id="x", question="What is 6 * 7?"))
    assert scripted.requests[0].messages == expected
    assert expected[0].role == "system", "the template adds its system prompt"


def test_self_consistency_votes_over_n_samples_in_one_request() -> None:
    generator = ScriptedGenerator(votes)
    with TestClient(create_app(generator, _settings())) as client:
        response = client.post(
            "/v1/chat/completions",
            json=_chat(strategy="self-consistency", n=5, verifier="math", seed=11),
        )
    assert response.status_code == 200, response.text
    body = response.json()
    # the reply is the first sample of the winning answer (5), not the first sample
    assert body["choices"][0]["message"]["content"] == "Sample 1 reasons a while. The answer is 5."
    assert body["reasoner"]["prediction"] == "5"
    assert body["reasoner"]["votes"] == 3 and body["reasoner"]["samples"] == 5
    assert body["usage"]["completion_tokens"] == 5 * 9
    assert generator.calls == [1], "all n samples are one engine request"
    (request,) = generator.requests
    assert request.sampling.n == 5 and request.sampling.temperature == 0.7
    assert request.sampling.seed is not None


def test_a_reference_answer_is_checked(client: TestClient) -> None:
    right = client.post("/v1/chat/completions", json=_chat(answer="7")).json()
    wrong = client.post("/v1/chat/completions", json=_chat(answer="8")).json()
    assert right["reasoner"]["verdict"] == "correct"
    assert wrong["reasoner"]["verdict"] == "incorrect"


# -- streaming -----------------------------------------------------------------------------
def _events(text: str) -> list[Any]:
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            payload = block[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_streaming_sends_the_answer_as_openai_chunks(client: TestClient) -> None:
    plain = client.post("/v1/chat/completions", json=_chat(seed=3)).json()
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json=_chat(seed=3, stream=True, stream_options={"include_usage": True}),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content_chunks = [c for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]]
    assert len(content_chunks) > 2, "the answer arrives in pieces"
    text = "".join(c["choices"][0]["delta"]["content"] for c in content_chunks)
    assert text == plain["choices"][0]["message"]["content"]
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_streaming_without_include_usage_has_no_usage_chunk(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=_chat(stream=True))
    chunks = _events(response.text)[:-1]
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("text", ["", "one", "  lead and trail  ", "a\n\nb  c\td " * 20])
def test_stream_pieces_join_back_exactly(text: str) -> None:
    pieces = split_for_stream(text, size=8)
    assert "".join(pieces) == text
    assert all(pieces)


def test_the_openai_client_works_against_the_app(scripted: ScriptedGenerator) -> None:
    openai = pytest.importorskip("openai")
    with TestClient(create_app(scripted, _settings())) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http)
        assert [m.id for m in client.models.list()] == [MODEL, "alias-model"]
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is 3 + 4?"}],
            extra_body={"strategy": "self-consistency", "n": 4, "verifier": "math"},
        )
        assert reply.choices[0].message.content.endswith("The answer is 7.")
        assert reply.usage is not None and reply.usage.completion_tokens == 4 * 11
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert streamed == "You said: Hi The answer is 7."
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], extra_body={"n": 0}
            )
        assert refused.value.param == "n"


# -- timeouts and batching -----------------------------------------------------------------
def test_a_request_past_its_timeout_is_504_and_the_server_goes_on() -> None:
    gate = threading.Event()
    generator = ScriptedGenerator(echo, gate=gate)
    with TestClient(create_app(generator, _settings())) as client:
        late = client.post("/v1/chat/completions", json=_chat(timeout=0.3))
        assert late.status_code == 504
        assert late.json()["error"]["param"] == "timeout"
        assert late.json()["error"]["type"] == "timeout_error"
        gate.set()
        again = client.post("/v1/chat/completions", json=_chat())
        assert again.status_code == 200


def test_concurrent_requests_share_engine_batches() -> None:
    gate = threading.Event()
    generator = ScriptedGenerator(echo, gate=gate)
    app = create_app(generator, _settings())
    batching: BatchingGenerator = app.state.batching
    clients = 6
    with TestClient(app) as client, ThreadPoolExecutor(clients) as pool:
        first = pool.submit(client.post, "/v1/chat/completions", json=_chat("q0"))
        assert generator.entered.wait(30)  # the first request holds the engine
        rest = [
            pool.submit(client.post, "/v1/chat/completions", json=_chat(f"q{i}"))
            for i in range(1, clients)
        ]
        while batching.stats.calls < clients:  # every request has reached the batcher
            threading.Event().wait(0.01)
        gate.set()
        replies = [f.result() for f in [first, *rest]]
    assert all(r.status_code == 200 for r in replies)
    texts = sorted(r.json()["choices"][0]["message"]["content"] for r in replies)
    assert texts == sorted(f"You said: q{i} The answer is 7." for i in range(clients))
    assert generator.calls == [1, clients - 1], "the waiting requests went in as one batch"


# -- the batching generator on its own ------------------------------------------------------
def _requests(*prompts: str) -> list[GenerationRequest]:
    from reasoner.types import ChatMessage

    return [
        GenerationRequest(messages=(ChatMessage("user", p),), sampling=SamplingParams())
        for p in prompts
    ]


def test_batching_generator_returns_each_callers_own_results() -> None:
    generator = BatchingGenerator(ScriptedGenerator(echo))
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(
                pool.map(lambda i: generator.generate(_requests(f"a{i}", f"b{i}")), range(8))
            )
    finally:
        generator.close()
    for i, (a, b) in enumerate(results):
        assert a[0].text == f"You said: a{i} The answer is 7."
        assert b[0].text == f"You said: b{i} The answer is 7."
    assert generator.stats.requests == 16


def test_a_cancelled_call_raises_and_later_calls_work() -> None:
    gate = threading.Event()
    inner = ScriptedGenerator(echo, gate=gate)
    generator = BatchingGenerator(inner)
    token = CancelToken()
    try:
        timer = threading.Timer(0.2, token.cancel, args=("too slow",))
        timer.start()
        with cancel_scope(token), pytest.raises(Cancelled, match="too slow"):
            generator.generate(_requests("x"))
        gate.set()
        assert generator.generate(_requests("y"))[0][0].text.startswith("You said: y")
    finally:
        generator.close()


def test_an_engine_error_reaches_every_caller_of_the_batch() -> None:
    def broken(request: GenerationRequest, index: int) -> str:
        raise RuntimeError("engine exploded")

    generator = BatchingGenerator(ScriptedGenerator(broken))
    try:
        with pytest.raises(RuntimeError, match="engine exploded"):
            generator.generate(_requests("x"))
    finally:
        generator.close()
    with pytest.raises(Exception, match="closed"):
        generator.generate(_requests("y"))


def test_drain_results_frees_the_engine_only_when_the_consumer_stops_early() -> None:
    """The delivery loop both engine-backed generators share: every result in arrival order,
    an error raised, and the early-stop hook run only when results were left undelivered."""
    events: list[str] = []

    def results(*items: Any) -> queue.SimpleQueue[Any]:
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for item in items:
            q.put(item)
        return q

    def drain(q: queue.SimpleQueue[Any], count: int) -> Iterator[tuple[int, list[Completion]]]:
        return drain_results(
            q, count, lambda: events.append("unregister"), lambda: events.append("abort")
        )

    assert [i for i, _ in drain(results((1, []), (0, [])), 2)] == [1, 0]
    assert events == ["unregister"]
    events.clear()
    stream = drain(results((0, []), (1, [])), 2)
    next(stream)
    stream.close()
    assert events == ["unregister", "abort"]
    events.clear()
    with pytest.raises(RuntimeError, match="engine died"):
        list(drain(results((0, []), RuntimeError("engine died")), 2))
    assert events == ["unregister", "abort"]
