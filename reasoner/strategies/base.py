"""The Strategy contract: problems in, one Trace per problem out, every call recorded.

`on_trace` is called as each problem finishes (not when the whole batch does), which is what
lets the runner append it to disk at once and lose nothing to a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.prompts import PromptTemplate
from reasoner.types import Completion, Problem, SamplingParams, Trace, Usage, Verdict
from reasoner.verifiers.base import Verifier

TraceCallback = Callable[[Trace], None]
OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True)
class Budget:
    """Per-problem caps. Tokens are prompt plus completion tokens as sent, not net of prefix-cache
    hits: cache hits depend on what else was in the batch, and a budget decision that did would
    make a resumed run search differently from an uninterrupted one."""

    tokens: int | None = None
    calls: int | None = None

    def exhausted(self, usage: Usage) -> bool:
        spent = usage.prompt_tokens + usage.completion_tokens
        return (self.tokens is not None and spent >= self.tokens) or (
            self.calls is not None and usage.engine_calls >= self.calls
        )


@dataclass(frozen=True)
class StrategyConfig:
    """`options` are the strategy's own knobs (each strategy validates them with its `Options`
    model); `scorer` ranks candidates or scores steps without seeing the gold answer, while
    the run's verifier decides the final verdict. `oracle` lets scorers and feedback checkers
    see the gold (and lets one that grades against it be used at all): such a run measures
    the search with the answer key, not the model, and its summary says so."""

    prompt: PromptTemplate
    sampling: SamplingParams  # n and temperature are the strategy's to set
    n: int = 1
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    budget: Budget = Budget()
    scorer: Verifier | None = None
    oracle: bool = False


def parse_options(model: type[OptionsT], options: Mapping[str, Any], strategy: str) -> OptionsT:
    """A strategy's options, with errors that name the offending `strategy.options.<key>`."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = "strategy.options." + ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                valid = ", ".join(sorted(model.model_fields)) or "none (it takes no options)"
                problems.append(f"unknown key {where!r} for {strategy}; valid keys: {valid}")
            else:
                problems.append(f"{where}: {error['msg']}")
        raise ConfigError("; ".join(problems)) from None


def blind(problem: Problem) -> Problem:
    """The problem without its gold answer and without the metadata that carries the gold
    (`problem.gold_fields`: a reference formalisation, an equation, grading tests), as a scorer
    must see it: a scorer that could read the key would turn best-of-N into pass@N."""
    hidden = set(problem.gold_fields)
    metadata = {k: v for k, v in problem.metadata.items() if k not in hidden}
    return dataclasses.replace(problem, answer=None, metadata=metadata, gold_fields=())


def checker_view(problem: Problem, config: StrategyConfig) -> Problem:
    """What a scorer or feedback checker is shown: the blinded problem, or with
    `config.oracle` the problem as it is."""
    return problem if config.oracle else blind(problem)


def oracle_refusal(what: str, role: str) -> str:
    """The message for a gold-reading checker in a run that does not declare itself an oracle."""
    return (
        f"{what} grades against the gold answer, so as {role} it is an oracle: the run would "
        "pick or refine with the answer key and report something closer to pass@k than "
        "accuracy. Use a blind scorer (judge, reward-model), or set strategy.oracle=true to run "
        "it as an oracle (the summary and report label the run so)"
    )


def require_blind(checker: Verifier, config: StrategyConfig, role: str) -> None:
    """Refuse a checker that reads the gold (`Verifier.reads_gold`) unless `config.oracle`."""
    if checker.reads_gold and not config.oracle:
        raise ConfigError(oracle_refusal(f"the {checker.name!r} verifier", role))


def charge_scorer(usage: Usage, verdicts: Sequence[Verdict]) -> None:
    """Add what a model-based scorer spent (an LLM judge reports its tokens in
    `details["usage"]`), so a judged strategy does not look cheaper than it was."""
    for verdict in verdicts:
        spent = verdict.details.get("usage")
        if isinstance(spent, dict):
            usage.prompt_tokens += int(spent.get("prompt_tokens", 0))
            usage.cached_prompt_tokens += int(spent.get("cached_prompt_tokens", 0))
            usage.completion_tokens += int(spent.get("completion_tokens", 0))


def charge(usage: Usage, completions: Sequence[Completion]) -> None:
    """Add one request's tokens; its prompt is counted once however many samples it had."""
    if completions:
        usage.prompt_tokens += completions[0].prompt_tokens
        usage.cached_prompt_tokens += completions[0].cached_prompt_tokens
    usage.completion_tokens += sum(c.completion_tokens for c in completions)


def charge_call(requests: Iterable[tuple[Usage, Sequence[Completion]]]) -> None:
    """Charge one engine call: each request's tokens to its problem's usage, and one engine
    call to every problem that had a request in it, however many it had."""
    counted: set[int] = set()
    for usage, completions in requests:
        charge(usage, completions)
        if id(usage) not in counted:
            counted.add(id(usage))
            usage.engine_calls += 1


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem sampling seed: stable across runs and independent of batch order, so a
    resumed run draws the samples the uninterrupted run would have drawn."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class Batch:
    """One `Strategy.run` call: the problems, what they are run with, and the traces of the
    problems finished so far. `finish` hands a trace to `on_trace` at once, which is what lets
    the runner append it to disk before the rest of the batch is done."""

    problems: Sequence[Problem]
    generator: Generator
    verifier: Verifier
    config: StrategyConfig
    on_trace: TraceCallback | None = None
    finished: dict[int, Trace] = field(default_factory=dict)

    def finish(self, index: int, trace: Trace) -> None:
        """Record problem `index`'s trace and hand it to `on_trace`."""
        self.finished[index] = trace
        if self.on_trace is not None:
            self.on_trace(trace)

    def traces(self) -> list[Trace]:
        """The finished traces in problem order."""
        return [self.finished[index] for index in sorted(self.finished)]


class Strategy(ABC):
    name: ClassVar[str]
    default_temperature: ClassVar[float]
    #: whether the strategy needs `StrategyConfig.scorer` (a verifier that ranks without gold)
    needs_scorer: ClassVar[bool] = False

    def validate(self, config: StrategyConfig) -> None:  # noqa: B027 - optional hook
        """Reject bad options before any model is loaded."""

    def needs_scorer_for(self, config: StrategyConfig) -> bool:
        """Whether this configuration needs `StrategyConfig.scorer` (options may decide)."""
        return self.needs_scorer

    def prompts(self, config: StrategyConfig) -> list[PromptTemplate]:
        """The templates this configuration renders, so the run manifest hashes the prompts
        the model actually saw (a strategy with its own prompt does not use the benchmark's)."""
        return [config.prompt]

    def run(
        self,
        problems: Sequence[Problem],
        generator: Generator,
        verifier: Verifier,
        config: StrategyConfig,
        on_trace: TraceCallback | None = None,
    ) -> list[Trace]:
        """The Trace of each finished problem (normally all), in problem order; each is handed
        to `on_trace` as soon as its problem finishes."""
        batch = Batch(problems, generator, verifier, config, on_trace)
        self.solve(batch)
        return batch.traces()

    @abstractmethod
    def solve(self, batch: Batch) -> None:
        """Run every problem of `batch`, calling `batch.finish(index, trace)` as each is done."""
