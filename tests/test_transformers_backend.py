"""The transformers backend on the real SmolLM2 weights (seconds, so in the fast tier)."""

from __future__ import annotations

from typing import Any

from reasoner.types import ChatMessage, GenerationRequest, SamplingParams

CHAT = (ChatMessage("user", "Count from 1 to 10, separated by spaces."),)


def test_batch_of_chats_and_prompts(hf_generator: Any) -> None:
    requests = [
        GenerationRequest(messages=CHAT, sampling=SamplingParams(max_tokens=24)),
        GenerationRequest(prompt="The capital of France is", sampling=SamplingParams(max_tokens=4)),
    ]
    chat, prompt = hf_generator.generate(requests)
    assert len(chat) == 1 and len(prompt) == 1
    assert chat[0].completion_tokens > 0 and chat[0].prompt_tokens > 5
    assert chat[0].finish_reason in ("stop", "length")
    assert prompt[0].finish_reason == "length" and prompt[0].completion_tokens == 4
    assert "Paris" in prompt[0].text


def test_n_samples_seeds_and_logprobs(hf_generator: Any) -> None:
    sampling = SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=7, logprobs=1)
    first = hf_generator.generate([GenerationRequest(messages=CHAT, sampling=sampling)])[0]
    again = hf_generator.generate([GenerationRequest(messages=CHAT, sampling=sampling)])[0]
    assert len(first) == 3
    assert [c.text for c in first] == [c.text for c in again]
    assert first[0].logprobs is not None
    assert len(first[0].logprobs) == first[0].completion_tokens
    assert all(lp.logprob <= 0.0 for lp in first[0].logprobs)


def test_stop_strings_cut_the_text(hf_generator: Any) -> None:
    sampling = SamplingParams(max_tokens=40, stop=("5",))
    out = hf_generator.generate([GenerationRequest(messages=CHAT, sampling=sampling)])[0][0]
    assert "5" not in out.text and out.finish_reason == "stop"
