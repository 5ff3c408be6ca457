"""A chat request as a one-problem strategy run: validate it against what the server holds,
run the strategy in a request thread on the shared (batching) generator, and shape the reply.

Everything that can be wrong with a request is found in `prepare`, before any engine time is
spent, and reported as a `RequestError` that names the field at fault.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reasoner.errors import ConfigError, ReasonerError, unknown_choice
from reasoner.models.base import Generator
from reasoner.prompts import PromptTemplate, load_prompt
from reasoner.serving.answers import CHAT_PROMPT, ReferenceFreeVerifier, final_completion
from reasoner.serving.protocol import ChatRequest
from reasoner.strategies import STRATEGIES, Budget, Strategy, StrategyConfig, load_strategy
from reasoner.types import ChatMessage, GenerationRequest, Problem, SamplingParams, Trace
from reasoner.verifiers import VERIFIERS, Verifier
from reasoner.verifiers import load as load_verifier


class ServeLimits(BaseModel):
    """The defaults and limits a server applies to every request: what `reasoner serve`'s config
    (ServeConfig) and the app's settings (ServeSettings) share, declared once."""

    model_config = ConfigDict(extra="forbid")
    #: the strategy of a request that names none
    default_strategy: str = "greedy"
    #: the verifier of a request that names none
    default_verifier: str = "math"
    #: max_tokens of a request that sets none
    default_max_tokens: int = Field(512, ge=1)
    #: the largest n a request may ask for (400 above it)
    max_n: int = Field(64, ge=1)
    #: seconds a request may run before it is cancelled
    request_timeout_s: float = Field(600.0, gt=0)
    #: requests served at once; more wait
    max_concurrent_requests: int = Field(256, ge=1)
    #: seconds a verifier may take per check
    verifier_timeout_s: float = Field(10.0, gt=0)
    #: how long concurrent requests are gathered into one engine batch
    batch_window_ms: float = Field(5.0, ge=0)
    #: clients must send `Authorization: Bearer <api_key>` on /v1/* (None: no check)
    api_key: str | None = None


class ServeSettings(ServeLimits):
    """The server's side of every request: the model's names, defaults and limits."""

    served_model_name: str
    #: other names a request may use for the model (the model's path, its alias)
    aliases: list[str] = []


class RequestError(ReasonerError):
    """A request the server refuses: HTTP status, OpenAI error type and the field at fault."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.kind = kind
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class Prepared:
    """A validated request, ready to run."""

    id: str
    request: ChatRequest
    problem: Problem
    strategy: Strategy
    verifier: Verifier
    config: StrategyConfig
    timeout_s: float


@dataclass
class Answer:
    trace: Trace
    text: str
    finish_reason: str


class ChatService:
    """Holds the generator and the verifiers shared by all requests (verifiers keep worker
    processes, so they are loaded once per name, on first use)."""

    def __init__(self, generator: Generator, settings: ServeSettings) -> None:
        self.generator = generator
        self.settings = settings
        self._lock = threading.Lock()
        self._verifiers: dict[str, Verifier] = {}
        self._prompts: dict[str, PromptTemplate] = {}

    @property
    def model_names(self) -> list[str]:
        return [self.settings.served_model_name, *self.settings.aliases]

    # -- validation ------------------------------------------------------------------------
    def prepare(self, request: ChatRequest) -> Prepared:
        s = self.settings
        if request.model not in self.model_names:
            raise RequestError(
                f"model {request.model!r} is not served here; choose one of: "
                + ", ".join(self.model_names),
                "model",
                code="model_not_found",
            )
        strategy_name = request.strategy or s.default_strategy
        if strategy_name not in STRATEGIES:
            raise RequestError(unknown_choice("strategy", strategy_name, STRATEGIES), "strategy")
        strategy = load_strategy(strategy_name)
        if request.n > s.max_n:
            raise RequestError(f"n must be at most {s.max_n} on this server", "n")
        verifier = self._verifier(request.verifier or s.default_verifier, request.answer)
        chat = tuple(_chat_message(m.role, m.text()) for m in request.messages)
        users = [m for m in chat if m.role == "user"]
        if not users:
            raise RequestError("the chat needs at least one user message", "messages")
        problem = Problem(id="chat", question=users[-1].content, answer=request.answer)
        if request.prompt is None:
            prompt: PromptTemplate = CHAT_PROMPT
            problem = dataclasses.replace(problem, metadata={"chat": chat})
        else:
            prompt = self._prompt(request.prompt)
        max_tokens = request.max_completion_tokens or request.max_tokens or s.default_max_tokens
        temperature = (
            request.temperature if request.temperature is not None else strategy.default_temperature
        )
        sampling = SamplingParams(
            temperature=temperature,
            top_p=request.top_p,
            max_tokens=max_tokens,
            stop=request.stop_strings(),
        )
        seed = request.seed if request.seed is not None else random.getrandbits(31)
        config = StrategyConfig(
            prompt,
            sampling,
            n=request.n,
            seed=seed,
            options=request.options,
            budget=Budget(request.budget_tokens, request.budget_calls),
            scorer=self._scorer(request.scorer, strategy),
        )
        try:
            strategy.validate(config)
        except ConfigError as exc:
            raise RequestError(str(exc), _param_of(str(exc))) from None
        self._check_context(prompt, problem, sampling)
        timeout = min(request.timeout or s.request_timeout_s, s.request_timeout_s)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        return Prepared(request_id, request, problem, strategy, verifier, config, timeout)

    def _check_context(
        self, prompt: PromptTemplate, problem: Problem, sampling: SamplingParams
    ) -> None:
        """A prompt longer than the model's window is the client's to shorten (400, as the
        OpenAI API answers it), found before the request reaches the engine."""
        request = GenerationRequest(messages=prompt.render(problem), sampling=sampling)
        reason = self.generator.prompt_overflow(request)
        if reason is not None:
            raise RequestError(reason, "messages", code="context_length_exceeded")

    def _verifier(self, name: str, reference: str | None) -> Verifier:
        if name not in VERIFIERS:
            raise RequestError(unknown_choice("verifier", name, VERIFIERS), "verifier")
        if reference is None and not VERIFIERS[name].can_extract_answers():
            readers = [n for n, cls in VERIFIERS.items() if cls.can_extract_answers()]
            raise RequestError(
                f"verifier {name!r} cannot read an answer without a reference; send `answer`, "
                f"or use one of: {', '.join(sorted(readers))}",
                "verifier",
            )
        return ReferenceFreeVerifier(self._shared_verifier(name))

    def _scorer(self, name: str | None, strategy: Strategy) -> Verifier | None:
        if name is None:
            if strategy.needs_scorer:
                raise RequestError(
                    f"strategy {strategy.name!r} ranks candidates and needs a `scorer` "
                    f"(one of: {', '.join(VERIFIERS.names())})",
                    "scorer",
                )
            return None
        if name not in VERIFIERS:
            raise RequestError(unknown_choice("scorer", name, VERIFIERS), "scorer")
        return self._shared_verifier(name, param="scorer")

    def _shared_verifier(self, name: str, param: str = "verifier") -> Verifier:
        with self._lock:
            if name not in self._verifiers:
                kwargs: dict[str, Any] = {"timeout_s": self.settings.verifier_timeout_s}
                if VERIFIERS[name].needs_generator:
                    kwargs["generator"] = self.generator  # graded on the served engine
                try:
                    self._verifiers[name] = load_verifier(name, **kwargs)
                except (TypeError, ReasonerError) as exc:
                    message = f"verifier {name!r} cannot be used here: {exc}"
                    raise RequestError(message, param) from None
            return self._verifiers[name]

    def _prompt(self, name: str) -> PromptTemplate:
        with self._lock:
            if name not in self._prompts:
                try:
                    self._prompts[name] = load_prompt(name)
                except ConfigError as exc:
                    raise RequestError(str(exc), "prompt") from None
            return self._prompts[name]

    # -- running ---------------------------------------------------------------------------
    def run(self, prepared: Prepared) -> Answer:
        """Runs in a request thread; the generator batches it with every other request."""
        try:
            traces = prepared.strategy.run(
                [prepared.problem], self.generator, prepared.verifier, prepared.config
            )
        except ConfigError as exc:  # options the strategy only checks when it runs
            raise RequestError(str(exc), _param_of(str(exc))) from None
        if not traces:
            raise ReasonerError(f"strategy {prepared.strategy.name!r} returned no trace")
        trace = traces[0]
        completion = final_completion(trace)
        text = completion.text if completion is not None else (trace.prediction or "")
        finish = completion.finish_reason if completion is not None else "stop"
        return Answer(trace, text, "length" if finish == "length" else "stop")

    def close(self) -> None:
        with self._lock:
            for verifier in self._verifiers.values():
                verifier.close()
            self._verifiers.clear()


def _chat_message(role: str, content: str) -> ChatMessage:
    return ChatMessage("system" if role == "developer" else role, content)  # type: ignore[arg-type]


def _param_of(message: str) -> str:
    """The request field a strategy's ConfigError is about."""
    if "strategy.options." in message or "option" in message:
        return "options"
    if "strategy.n" in message or "n=" in message:
        return "n"
    return "strategy"


def response_body(prepared: Prepared, answer: Answer, model: str) -> dict[str, Any]:
    """A `chat.completion` object; `reasoner` carries what the strategy did."""
    return {
        "id": prepared.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage_body(answer.trace),
        "reasoner": reasoner_body(prepared, answer.trace),
    }


def usage_body(trace: Trace) -> dict[str, Any]:
    u = trace.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
    }


def reasoner_body(prepared: Prepared, trace: Trace) -> dict[str, Any]:
    votes = None
    if trace.clusters and trace.prediction is not None:
        winner = next(
            (c for c, v in zip(trace.clusters, trace.samples, strict=False) if v is trace.verdict),
            None,
        )
        votes = trace.clusters.count(winner) if winner is not None and winner >= 0 else None
    return {
        "strategy": prepared.strategy.name,
        "n": prepared.config.n,
        "seed": prepared.config.seed,
        "prediction": trace.prediction,
        "verdict": trace.verdict.status if prepared.problem.answer is not None else None,
        "samples": len(trace.samples),
        "votes": votes,
        "engine_calls": trace.usage.engine_calls,
        "verifier_calls": trace.usage.verifier_calls,
        "wall_time_s": round(trace.usage.wall_time_s, 4),
    }
