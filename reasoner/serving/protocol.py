"""The request body of `/v1/chat/completions`: OpenAI's fields plus reasoner's own.

A client picks a strategy with extra fields (the `openai` client's `extra_body`). Unknown fields
are refused rather than ignored, so a misspelt `stratgy` is a 400 that names it instead of a
silent greedy answer; OpenAI fields that reasoner cannot honour (tools, penalties, logprobs) are
refused the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None: the strategy's default
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    #: samples per problem for the strategy (self-consistency votes over n); one choice returns
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # accepted because clients send their defaults; anything else is refused
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Literal["none", "auto"] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    # reasoner's own fields
    strategy: str | None = None  # default: the server's (greedy)
    verifier: str | None = None  # extracts and compares answers (math, choice, fol, ...)
    options: dict[str, Any] = {}  # the strategy's own knobs
    scorer: str | None = None  # a verifier that ranks candidates without a reference
    prompt: str | None = None  # a prompt template for the question; default: the chat as sent
    answer: str | None = None  # a reference answer, when the caller has one
    budget_tokens: int | None = Field(None, ge=1)
    budget_calls: int | None = Field(None, ge=1)
    timeout: float | None = Field(None, gt=0.0)  # seconds; at most the server's limit

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalties(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError("penalties are not supported; leave it at 0")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool) -> bool:
        if value:
            raise ValueError("logprobs are not returned by this server")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise ValueError("logprobs are not returned by this server")
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool calls are not supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def error_param(error: ErrorDetails) -> str:
    """A pydantic error location in OpenAI's style: `messages[0].role`."""
    text = ""
    for part in error["loc"]:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not text:
            text = str(part)
        elif part in {"str", "list[TextPart]"}:  # pydantic names the union member it tried
            continue
        else:
            text += f".{part}"
    return text


def describe_validation(exc: ValidationError) -> tuple[str, str]:
    """(the first field at fault, a message naming every fault)."""
    errors = exc.errors()
    messages = []
    for error in errors:
        param = error_param(error)
        if error["type"] == "extra_forbidden":
            messages.append(f"{param}: unknown field")
        else:
            messages.append(f"{param}: {error['msg']}")
    return error_param(errors[0]), "; ".join(dict.fromkeys(messages))
