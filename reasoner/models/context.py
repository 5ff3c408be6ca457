"""Does a request's prompt fit the model's context window? Checked before it reaches the engine.

vLLM refuses a prompt longer than `max_model_len` by raising, which would abort every other
request of the same engine call; a run instead gives that one problem an `error` verdict. The
prompt is measured in characters first: a tokenizer needs minutes (and gigabytes) for a 50 MB
line, and no token covers more characters than the longest string in the vocabulary (81 for
SmolLM2's, a run of `#`), so a prompt longer than that times the window cannot fit whatever it
tokenises to, and is refused without being tokenised.
"""

from __future__ import annotations

import functools
from typing import Any

from reasoner.types import GenerationRequest

#: characters per token assumed for a tokenizer that does not list its vocabulary
CHARS_PER_TOKEN_BOUND = 128


@functools.lru_cache(maxsize=8)
def max_chars_per_token(tokenizer: Any) -> int:
    """The most characters one token can stand for: its longest vocabulary entry."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if not callable(get_vocab):
        return CHARS_PER_TOKEN_BOUND
    return max((len(token) for token in get_vocab()), default=CHARS_PER_TOKEN_BOUND)


def prompt_chars(request: GenerationRequest) -> int:
    if request.prompt is not None:
        return len(request.prompt)
    return sum(len(m.content) for m in request.messages or ())


def prompt_token_ids(tokenizer: Any, request: GenerationRequest) -> list[int]:
    """The ids the engine would see: the chat template for `messages`, the tokenizer's special
    tokens for a raw `prompt` (as vLLM tokenises a text prompt)."""
    if request.messages is None:
        return list(tokenizer(request.prompt)["input_ids"])
    ids: Any = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in request.messages],
        add_generation_prompt=True,
        tokenize=True,
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def context_overflow(tokenizer: Any, request: GenerationRequest, max_model_len: int) -> str | None:
    """Why the prompt cannot be served in a `max_model_len`-token window, or None if it can.
    A prompt that leaves no room for a single new token is refused; one that leaves less room
    than `max_tokens` is served and stops at the window (finish reason `length`)."""
    chars = prompt_chars(request)
    if chars > max_model_len * max_chars_per_token(tokenizer):
        return (
            f"the prompt has {chars} characters, more than a {max_model_len}-token context "
            f"window can hold (model.max_model_len={max_model_len}); not tokenised"
        )
    tokens = len(prompt_token_ids(tokenizer, request))
    if tokens >= max_model_len:
        return (
            f"the prompt has {tokens} tokens and the context window {max_model_len} "
            f"(model.max_model_len): no room to generate"
        )
    return None
