"""Write a program, let a solver run it, repair what fails, vote: the loop shared by the
translate-then-solve strategies (LINC, Logic-LM, SatLM).

The model never answers directly. It writes a program (first-order formulas, a z3 script) and a
solver decides; the solver is exact, so what the model must get right is only the translation.
Each of a problem's K samples is a *chain*: its first program, then up to `max_refine_rounds`
repairs, each shown the error the parser or solver reported (Logic-LM's self-refinement). The
answer is the majority over the chains' last programs that the solver could decide.

Fallback (Logic-LM's backup strategy, Pan et al., 2023): when no chain's program is decided, the
problem is answered by chain of thought instead (`options.fallback: cot`, the default) with the
run's own prompt, greedily, in one engine call for every problem that needs it after the repair
rounds (unless the problem's budget is spent); `fallback: none` leaves it unanswered. The final
verdict's `details.answered_by` says which path answered (`program`, `fallback` or None), and the
run summary counts each (`answered_by`).

Batching: round 0 is one engine call for every problem's K samples; each refine round is one
engine call for every failing chain of every problem. A problem whose chains all succeeded (or
that has no rounds or budget left) is handed to `on_trace` at once, so a crash loses nothing it
had finished.

Recording: each engine request is a Step (round 0: one request with K samples; a repair: one
request with one sample), each sample's Verdict is the run verifier's verdict on the answer its
program produced, or an `error` verdict naming why the program could not be decided; `tree`
has one node per program with its chain, round, answer and error, which is what the error-rate
summaries and the SFT export read. The trace's `candidates` are the round-0 samples, so the
summary's pass@k / maj@k describe the K first programs; the final verdict is the one after repair.
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from reasoner.models.base import Generator
from reasoner.prompts import PromptTemplate, load_prompt
from reasoner.strategies.base import (
    Batch,
    Strategy,
    StrategyConfig,
    charge_call,
    parse_options,
    problem_seed,
)
from reasoner.strategies.n_sample import require_samples
from reasoner.strategies.voting import cluster_answers
from reasoner.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    Problem,
    Step,
    Trace,
    Usage,
    Verdict,
)
from reasoner.verifiers.base import Verifier

#: how much of a program or error message a tree node keeps (the full text is in the steps)
_NODE_TEXT = 600


class ExecuteOptions(BaseModel):
    """Knobs every execute-and-vote strategy has; subclasses add their solver's."""

    model_config = ConfigDict(extra="forbid")
    #: the prompt that asks for a program (each subclass names its own default)
    prompt: str
    #: the prompt that sends a failed program back with the solver's error
    refine_prompt: str
    #: repairs per chain after the first program (0: no repair)
    max_refine_rounds: int = Field(1, ge=0)
    #: solver runs at once (provers and sandboxes are separate processes)
    workers: int = Field(2, ge=1)
    #: when no program is decided: answer by chain of thought with the run's prompt (`cot`,
    #: Logic-LM's backup strategy) or leave the problem unanswered (`none`)
    fallback: Literal["cot", "none"] = "cot"


@dataclass(frozen=True)
class Outcome:
    """What the solver made of one program: an answer in the benchmark's format (a label or an
    option letter), or an error kind and a message the model can act on."""

    answer: str | None
    error: str | None = None
    message: str = ""
    #: the solver itself could not run (not installed, sandbox down): a set-up fault
    infrastructure: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Attempt:
    index: int  # position among the problem's programs, in the order they were written
    chain: int
    round: int
    parent: int | None  # the attempt this one repairs
    messages: tuple[ChatMessage, ...]  # the chat that produced it
    completion: Completion
    outcome: Outcome
    verdict: Verdict


@dataclass
class _Search:
    problem: Problem
    messages: tuple[ChatMessage, ...]
    started: float
    usage: Usage = field(default_factory=Usage)
    steps: list[Step] = field(default_factory=list)
    attempts: list[_Attempt] = field(default_factory=list)
    latest: dict[int, _Attempt] = field(default_factory=dict)  # chain -> its last attempt
    done: bool = False


# the chain-of-thought request and its answer for a problem no program decided
_Fallback = tuple[GenerationRequest, Completion]

# (problem, the request, chain, the program, the attempt it repairs)
_Job = tuple[_Search, GenerationRequest, int, Completion, _Attempt | None]


def answer_completion(answer: str) -> Completion:
    """The final answer as a completion the run's verifier reads: `choice` wants a cued letter,
    `fol` a label after "The answer is"."""
    shown = f"({answer})" if len(answer) == 1 and answer.isupper() else answer
    return Completion(f"The answer is {shown}.", "stop", 0, 0)


def majority(answers: Sequence[str | None]) -> str | None:
    """The most common answer; ties go to the answer whose first vote came first (chain order),
    so the result does not depend on anything but the chains."""
    votes = [a for a in answers if a is not None]
    if not votes:
        return None
    counts = Counter(votes)
    best = max(counts.values())
    return next(a for a in votes if counts[a] == best)


ExecuteOptionsT = TypeVar("ExecuteOptionsT", bound="ExecuteOptions")


class ExecuteAndVote(Strategy, Generic[ExecuteOptionsT]):
    """Subclasses say how to run a program (`execute`) and, where the solver needs more than
    the problem rendered into `options.prompt`, how to ask for one (`first_messages`). Their
    options name the program prompt (`prompt`) and the repair prompt (`refine_prompt`)."""

    default_temperature: ClassVar[float] = 0.7
    options_model: type[ExecuteOptionsT]

    # --- what a subclass provides ---------------------------------------------------------

    @abstractmethod
    def execute(self, problem: Problem, text: str, options: ExecuteOptionsT) -> Outcome:
        """Run one program; never raises for anything the program does."""

    def first_messages(self, problem: Problem, options: ExecuteOptionsT) -> tuple[ChatMessage, ...]:
        """The chat that asks for a program: `options.prompt` rendered for the problem."""
        return load_prompt(options.prompt).render(problem)

    def repair_messages(
        self,
        problem: Problem,
        first: tuple[ChatMessage, ...],
        attempt: str,
        error: str,
        options: ExecuteOptionsT,
    ) -> tuple[ChatMessage, ...]:
        """The chat that asks to fix `attempt`: the first chat, the attempt as the assistant's
        turn, then `options.refine_prompt` rendered with the solver's `error`."""
        feedback = load_prompt(options.refine_prompt).render(problem, error=error)
        return (*first, ChatMessage("assistant", attempt), *feedback)

    def check_ready(self, options: ExecuteOptionsT) -> None:
        """Raise ConfigError when the solver cannot run at all, before a model is loaded."""

    # --- the loop ---------------------------------------------------------------------------

    def options(self, config: StrategyConfig) -> ExecuteOptionsT:
        return parse_options(self.options_model, config.options, self.name)

    def prompts(self, config: StrategyConfig) -> list[PromptTemplate]:
        options = self.options(config)
        return [load_prompt(options.prompt), load_prompt(options.refine_prompt)]

    def validate(self, config: StrategyConfig) -> None:
        require_samples(config)
        options = self.options(config)
        load_prompt(options.prompt)  # both named prompts exist
        load_prompt(options.refine_prompt)
        self.check_ready(options)

    def solve(self, batch: Batch) -> None:
        generator, verifier, config = batch.generator, batch.verifier, batch.config
        self.validate(config)
        options = self.options(config)
        started = time.perf_counter()
        searches = [
            _Search(problem, self.first_messages(problem, options), started)
            for problem in batch.problems
        ]
        deferred: list[int] = []  # undecided problems waiting for the batched fallback

        def finish(index: int, fallback: _Fallback | None = None) -> None:
            search = searches[index]
            search.done = True
            if (
                fallback is None
                and options.fallback == "cot"
                and _needs_fallback(search)
                and not config.budget.exhausted(search.usage)  # the budget caps it too
            ):
                deferred.append(index)
                return
            batch.finish(index, self._trace(search, verifier, fallback))

        # round 0: K programs per problem, every problem in one engine call
        requests = [
            GenerationRequest(
                messages=s.messages,
                sampling=dataclasses.replace(
                    config.sampling, n=config.n, seed=problem_seed(config.seed, s.problem.id)
                ),
            )
            for s in searches
        ]
        outputs = generator.generate(requests) if requests else []
        jobs: list[_Job] = [
            (s, request, chain, completion, None)
            for s, request, completions in zip(searches, requests, outputs, strict=True)
            for chain, completion in enumerate(completions)
        ]
        steps = [(s, r, c) for s, r, c in zip(searches, requests, outputs, strict=True)]
        self._record(jobs, steps, verifier, options, 0)

        for round_ in range(1, options.max_refine_rounds + 1):
            pending: list[tuple[_Search, _Attempt]] = []
            for index, search in enumerate(searches):
                if search.done:
                    continue
                failing = [a for a in search.latest.values() if _repairable(a.outcome)]
                if not failing or config.budget.exhausted(search.usage):
                    finish(index)
                    continue
                pending += [(search, attempt) for attempt in failing]
            if not pending:
                break
            repair_requests = [
                GenerationRequest(
                    messages=self.repair_messages(
                        search.problem,
                        search.messages,
                        attempt.completion.text,
                        attempt.outcome.message,
                        options,
                    ),
                    sampling=dataclasses.replace(
                        config.sampling,
                        n=1,
                        seed=_repair_seed(config.seed, search.problem.id, attempt.chain, round_),
                    ),
                )
                for search, attempt in pending
            ]
            repaired = generator.generate(repair_requests)
            jobs = [
                (search, request, attempt.chain, completions[0], attempt)
                for (search, attempt), request, completions in zip(
                    pending, repair_requests, repaired, strict=True
                )
            ]
            steps = [
                (search, request, completions)
                for (search, _), request, completions in zip(
                    pending, repair_requests, repaired, strict=True
                )
            ]
            self._record(jobs, steps, verifier, options, round_)

        for index, search in enumerate(searches):
            if not search.done:
                finish(index)
        if deferred:
            # one engine call for every problem no program decided (finish() defers them)
            fallbacks = self._fall_back([searches[i] for i in deferred], generator, config)
            for index, fallback in zip(deferred, fallbacks, strict=True):
                finish(index, fallback)

    def _fall_back(
        self, undecided: list[_Search], generator: Generator, config: StrategyConfig
    ) -> list[_Fallback]:
        """One greedy chain-of-thought answer per undecided problem, all in one engine call,
        with the run's prompt (Logic-LM's backup is its greedy CoT baseline)."""
        requests = [
            GenerationRequest(
                messages=config.prompt.render(search.problem),
                sampling=dataclasses.replace(
                    config.sampling,
                    n=1,
                    temperature=0.0,
                    seed=problem_seed(config.seed, f"{search.problem.id}\0fallback"),
                ),
            )
            for search in undecided
        ]
        outputs = generator.generate(requests)
        charge_call((s.usage, c) for s, c in zip(undecided, outputs, strict=True))
        return [(r, c[0]) for r, c in zip(requests, outputs, strict=True)]

    def _record(
        self,
        jobs: list[_Job],
        steps: list[tuple[_Search, GenerationRequest, list[Completion]]],
        verifier: Verifier,
        options: ExecuteOptionsT,
        round_: int,
    ) -> None:
        """Execute every program of one engine call (concurrently), verdict each, and record
        the requests as steps."""

        def run_one(job: _Job) -> Outcome:
            search, _, _, completion, _ = job
            return self.execute(search.problem, completion.text, options)

        if len(jobs) > 1 and options.workers > 1:
            with ThreadPoolExecutor(max_workers=min(options.workers, len(jobs))) as pool:
                outcomes = list(pool.map(run_one, jobs))
        else:
            outcomes = [run_one(job) for job in jobs]
        verdicts_by_job = [
            _sample_verdict(search.problem, outcome, verifier, chain, round_)
            for (search, _, chain, _, _), outcome in zip(jobs, outcomes, strict=True)
        ]
        by_request: dict[int, list[Verdict]] = {}
        for (search, request, chain, completion, parent), outcome, verdict in zip(
            jobs, outcomes, verdicts_by_job, strict=True
        ):
            attempt = _Attempt(
                index=len(search.attempts),
                chain=chain,
                round=round_,
                parent=None if parent is None else parent.index,
                messages=request.messages or (),
                completion=completion,
                outcome=outcome,
                verdict=verdict,
            )
            search.attempts.append(attempt)
            search.latest[chain] = attempt
            search.usage.verifier_calls += 1
            by_request.setdefault(id(request), []).append(verdict)
        charge_call((search.usage, completions) for search, _, completions in steps)
        for search, request, completions in steps:
            search.steps.append(Step(request, completions, by_request.get(id(request), [])))

    def _trace(
        self, search: _Search, verifier: Verifier, fallback: _Fallback | None = None
    ) -> Trace:
        problem = search.problem
        finals = [search.latest[chain] for chain in sorted(search.latest)]
        answers = [a.outcome.answer for a in finals]
        winner = majority(answers)
        details: dict[str, Any] = {
            "chains": len(finals),
            "votes": dict(Counter(a for a in answers if a is not None)),
            "decided": sum(a is not None for a in answers),
            "final_errors": dict(Counter(a.outcome.error for a in finals if a.outcome.error)),
            "attempt_errors": dict(
                Counter(a.outcome.error for a in search.attempts if a.outcome.error)
            ),
            "repairs": sum(a.round > 0 for a in search.attempts),
            "answered_by": None if winner is None else "program",
        }
        prediction = winner
        if winner is not None:
            verdict = verifier.verify(problem, answer_completion(winner))
            verdict = dataclasses.replace(verdict, details={**verdict.details, **details})
        elif fallback is not None:
            request, completion = fallback
            verdict = verifier.verify(problem, completion)
            prediction = verdict.answer
            details["answered_by"] = None if prediction is None else "fallback"
            verdict = dataclasses.replace(
                verdict, details={**verdict.details, **details, "fallback": "cot"}
            )
            search.usage.verifier_calls += 1
            search.steps.append(Step(request, [completion], [verdict]))
        elif finals and all(a.outcome.infrastructure for a in finals):
            verdict = Verdict("error", 0.0, finals[0].outcome.message, None, details)
        else:
            reason = finals[0].outcome.message if finals else "no programs were written"
            feedback = f"no program could be decided; the first chain's error: {reason}"
            verdict = Verdict("incorrect", 0.0, feedback[:_NODE_TEXT], None, details)
        samples = [v for step in search.steps for v in step.verdicts]
        search.usage.wall_time_s = time.perf_counter() - search.started
        return Trace(
            problem=problem,
            steps=search.steps,
            prediction=prediction,
            verdict=verdict,
            usage=search.usage,
            clusters=cluster_answers(verifier, problem, samples),
            tree=[_node(a) for a in search.attempts],
            # pass@k / maj@k count the K first-round programs (step 0), never the repairs
            candidates=list(range(len(search.steps[0].verdicts))) if search.steps else [],
        )


def _needs_fallback(search: _Search) -> bool:
    """No chain was decided, for a reason the model caused: a missing solver is a set-up fault
    that stays an `error`, not something chain of thought should paper over."""
    finals = list(search.latest.values())
    if any(a.outcome.answer is not None for a in finals):
        return False
    return not (finals and all(a.outcome.infrastructure for a in finals))


def _repairable(outcome: Outcome) -> bool:
    """A program the model could fix: it failed, and not because the solver is missing."""
    return outcome.answer is None and not outcome.infrastructure


def _repair_seed(seed: int, problem_id: str, chain: int, round_: int) -> int:
    return problem_seed(seed, f"{problem_id}\0repair:{chain}:{round_}")


def _sample_verdict(
    problem: Problem, outcome: Outcome, verifier: Verifier, chain: int, round_: int
) -> Verdict:
    """The run verifier's verdict on the program's answer; a program that could not be decided
    is an `error` verdict (the solver could not turn it into an answer), as the fol verifier
    reports a formalisation that does not parse."""
    where = {"chain": chain, "round": round_, **outcome.details}
    if outcome.answer is None:
        return Verdict("error", 0.0, outcome.message, None, {**where, "error": outcome.error})
    verdict = verifier.verify(problem, answer_completion(outcome.answer))
    return dataclasses.replace(verdict, details={**verdict.details, **where})


def _node(attempt: _Attempt) -> dict[str, Any]:
    outcome = attempt.outcome
    return {
        "id": attempt.index,
        "parent": attempt.parent,
        "chain": attempt.chain,
        "round": attempt.round,
        "answer": outcome.answer,
        "error": outcome.error,
        "message": outcome.message[:_NODE_TEXT],
        "status": attempt.verdict.status,
    }
