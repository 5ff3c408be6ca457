"""The nouns every part of reasoner shares.

They are plain dataclasses so that a Trace can be written to JSONL and read back without any
framework: `to_dict` / `from_dict` round-trip exactly, which is what resume relies on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort", "error"]
VerdictStatus = Literal["correct", "incorrect", "error"]


@dataclass(frozen=True)
class Problem:
    """One benchmark item. `answer` is the gold answer already reduced to its final form.

    `gold_fields` names the metadata keys that carry the gold too (a reference formalisation,
    an equation, grading tests): `blind()` removes them with the answer, so a scorer cannot
    grade against the key (the data manifest declares them)."""

    id: str
    question: str
    answer: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    gold_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a row read back from results.jsonl has a list here
        object.__setattr__(self, "gold_fields", tuple(self.gold_fields))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(**data)


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Sampling knobs shared by every backend.

    `seed` is a per-request seed: with it, a request's samples do not depend on what else is in
    the batch, so a resumed run reproduces the samples an uninterrupted run would have drawn.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt (raw text) or a chat (rendered with the model's chat template), plus sampling."""

    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    sampling: SamplingParams = SamplingParams()
    adapter: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest takes exactly one of `messages` or `prompt`")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        messages = data.get("messages")
        sampling = dict(data.get("sampling") or {})
        if "stop" in sampling:
            sampling["stop"] = tuple(sampling["stop"])
        return cls(
            messages=None if messages is None else tuple(ChatMessage(**m) for m in messages),
            prompt=data.get("prompt"),
            sampling=SamplingParams(**sampling),
            adapter=data.get("adapter"),
        )


def as_finish_reason(value: str | None) -> FinishReason:
    """Backends name more reasons (tool calls, content filters, aborts); keep the contract's."""
    if value == "stop" or value is None:
        return "stop"
    return "length" if value == "length" else "abort"


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float


@dataclass(frozen=True)
class Completion:
    """One sampled continuation. `prompt_tokens` is repeated on each of a request's n samples;
    usage accounting counts it once per request. `cached_prompt_tokens` of them were served
    from the engine's prefix cache rather than prefilled, where the backend reports it."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None
    cached_prompt_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        logprobs = data.get("logprobs")
        return cls(
            text=data["text"],
            finish_reason=data["finish_reason"],
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=data["completion_tokens"],
            logprobs=None if logprobs is None else tuple(TokenLogprob(**lp) for lp in logprobs),
            cached_prompt_tokens=data.get("cached_prompt_tokens", 0),
        )


@dataclass(frozen=True)
class Verdict:
    """What a verifier says of one completion.

    `error` means the verifier itself failed (timeout, crash, unparsable gold); it is never
    folded into `incorrect`, so a broken checker cannot pass for a weak model.
    """

    status: VerdictStatus
    score: float
    feedback: str = ""
    answer: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_correct(self) -> bool:
        return self.status == "correct"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(**data)


@dataclass
class Usage:
    """Compute spent on a problem, so strategies can be compared at equal budget."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_calls: int = 0
    verifier_calls: int = 0
    wall_time_s: float = 0.0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.engine_calls += other.engine_calls
        self.verifier_calls += other.verifier_calls
        self.wall_time_s += other.wall_time_s

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(**data)


@dataclass
class Step:
    """One engine call made for a problem: the request sent, what came back, and the verdicts."""

    request: GenerationRequest
    completions: list[Completion]
    verdicts: list[Verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.to_dict(),
            "completions": [c.to_dict() for c in self.completions],
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        return cls(
            request=GenerationRequest.from_dict(data["request"]),
            completions=[Completion.from_dict(c) for c in data["completions"]],
            verdicts=[Verdict.from_dict(v) for v in data["verdicts"]],
        )


@dataclass
class Trace:
    """Everything a strategy did for one problem, and its final answer.

    `prediction` is the strategy's chosen answer and `verdict` that answer's verdict; `samples`
    holds one verdict per sampled completion and `clusters` the answer-equivalence class of
    each sample. `candidates` names the samples that pass@k and maj@k count (indices into
    `samples`), for a strategy whose samples are not all draws of one question: execute-and-vote
    counts its first-round programs, not their repairs. None means every sample counts.
    """

    problem: Problem
    steps: list[Step]
    prediction: str | None
    verdict: Verdict
    usage: Usage
    clusters: list[int] = field(default_factory=list)
    #: a search strategy's tree: one dict per node (id, parent, text, score, visits, ...)
    tree: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[int] | None = None

    @property
    def samples(self) -> list[Verdict]:
        return [v for step in self.steps for v in step.verdicts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem": self.problem.to_dict(),
            "prediction": self.prediction,
            "verdict": self.verdict.to_dict(),
            "clusters": self.clusters,
            "usage": self.usage.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            **({"tree": self.tree} if self.tree else {}),
            **({"candidates": self.candidates} if self.candidates is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        """The inverse of `to_dict`: a results.jsonl row read back as a Trace."""
        return cls(
            problem=Problem.from_dict(data["problem"]),
            steps=[Step.from_dict(s) for s in data["steps"]],
            prediction=data["prediction"],
            verdict=Verdict.from_dict(data["verdict"]),
            usage=Usage.from_dict(data["usage"]),
            clusters=list(data.get("clusters") or []),
            tree=list(data.get("tree") or []),
            candidates=None if data.get("candidates") is None else list(data["candidates"]),
        )
