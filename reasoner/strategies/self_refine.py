"""Self-refine: answer, check, show the model the check's feedback, answer again, up to k rounds.

The feedback comes from `strategy.scorer` (an LLM judge's reason, a prover's parse error) or,
with `feedback: verifier`, from the run's verifier. Either sees `blind(problem)` unless the run
is declared an oracle (`strategy.oracle: true`): a checker that knows the gold answer is an
oracle (the math verifier's feedback reads "expected 18, got 16"), and a loop that stops when an
oracle passes reports pass@k, not accuracy. So a checker that grades against the gold
(`Verifier.reads_gold`: math, fol, unit-tests, choice, ...) is refused as feedback without
`strategy.oracle: true`, and so is `feedback_sees_answer: true` (the older spelling of the same
request). With an oracle, `feedback_detail: verdict` shows the model only that it was wrong, not
the checker's text.

A refine turn continues the chat: the original prompt, then each earlier attempt as an assistant
turn followed by the refine prompt's user turn with that attempt's feedback. With `history:
full` (the default) every earlier attempt and its feedback stay in the chat, as Self-Refine
(Madaan et al., 2023) keeps the whole history in its refine prompt, so the model sees what it
already tried; `history: last` shows only the latest attempt and its feedback. Either way the
prompt's prefix is shared with the previous round and served from the prefix cache. Each round
is one engine call for every problem still refining; a problem stops when its check passes,
after `max_rounds` refinements, or once its budget is spent. The run's verifier grades every
round (Trace.steps) but never steers the loop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoner.errors import ConfigError
from reasoner.prompts import PromptTemplate, load_prompt
from reasoner.strategies.base import (
    Batch,
    Strategy,
    StrategyConfig,
    charge,
    charge_scorer,
    checker_view,
    oracle_refusal,
    parse_options,
    problem_seed,
    require_blind,
)
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

StopReason = Literal["passed", "max_rounds", "budget", "feedback_error"]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: refinements after the first attempt; a problem takes at most max_rounds + 1 engine calls
    max_rounds: int = Field(default=3, ge=0)
    feedback: Literal["scorer", "verifier"] = "scorer"
    #: the checker sees the gold answer: an oracle, which needs strategy.oracle=true (which
    #: shows the checker the gold by itself; this key is kept for configs that say it)
    feedback_sees_answer: bool = False
    #: "text": the checker's feedback; "verdict": only that the answer did not pass
    feedback_detail: Literal["text", "verdict"] = "text"
    #: a checker that failed (`error`) is no pass: refine anyway, or stop the problem there
    on_feedback_error: Literal["refine", "stop"] = "refine"
    refine_prompt: str = "math_refine"
    #: "full": every earlier attempt and its feedback (Madaan et al.); "last": only the latest
    history: Literal["full", "last"] = "full"


@dataclass
class _Problem:
    """One problem's state across rounds."""

    problem: Problem
    usage: Usage = field(default_factory=Usage)
    steps: list[Step] = field(default_factory=list)
    tree: list[dict[str, Any]] = field(default_factory=list)
    #: every attempt so far and the checker's verdict on it, oldest first
    attempts: list[tuple[str, Verdict]] = field(default_factory=list)


def load_refine_prompt(name: str) -> PromptTemplate:
    try:
        return load_prompt(name)
    except ConfigError as exc:
        raise ConfigError(f"strategy.options.refine_prompt: {exc}") from None


def refine_messages(
    prompt: PromptTemplate,
    refine: PromptTemplate,
    problem: Problem,
    attempts: Sequence[tuple[str, Verdict]],
    detail: Literal["text", "verdict"],
) -> tuple[ChatMessage, ...]:
    """The first prompt, then each attempt as the assistant's turn followed by the refine
    prompt's user turn with its feedback (the refine prompt's system part, if it has one, is
    not used: the conversation already has the first prompt's)."""
    messages = list(prompt.render(problem))
    for attempt, feedback in attempts:
        turn = refine.render(
            problem,
            feedback=feedback.feedback if detail == "text" else "",
            status=feedback.status,
        )[-1]
        messages += [ChatMessage("assistant", attempt), turn]
    return tuple(messages)


def stop_reason(feedback: Verdict, round_: int, options: Options, spent: bool) -> StopReason | None:
    """Why a problem stops after this round's check, or None if it gets another round."""
    if feedback.is_correct:
        return "passed"
    if feedback.status == "error" and options.on_feedback_error == "stop":
        return "feedback_error"
    if round_ >= options.max_rounds:
        return "max_rounds"
    if spent:
        return "budget"
    return None


class SelfRefine(Strategy):
    name: ClassVar[str] = "self-refine"
    default_temperature: ClassVar[float] = 0.0

    def validate(self, config: StrategyConfig) -> None:
        self.options(config)

    def needs_scorer_for(self, config: StrategyConfig) -> bool:
        """Whether these options need `strategy.scorer` (a hook for the runner to check before
        loading a model, since `needs_scorer` cannot depend on options)."""
        return parse_options(Options, config.options, self.name).feedback == "scorer"

    def prompts(self, config: StrategyConfig) -> list[PromptTemplate]:
        return [config.prompt, load_refine_prompt(self.options(config).refine_prompt)]

    def options(self, config: StrategyConfig) -> Options:
        if config.n != 1:
            raise ConfigError(
                f"self-refine refines one answer per problem: strategy.n must be 1, got {config.n}"
            )
        options = parse_options(Options, config.options, self.name)
        load_refine_prompt(options.refine_prompt)
        return options

    @staticmethod
    def feedback_verifier(options: Options, verifier: Verifier, config: StrategyConfig) -> Verifier:
        """The checker whose feedback steers the loop; one that reads the gold answer only in a
        run declared an oracle."""
        scorer = config.scorer
        if options.feedback == "scorer":
            if scorer is None:
                raise ConfigError(
                    "self-refine with strategy.options.feedback=scorer needs strategy.scorer "
                    "(e.g. strategy.scorer.name=judge), or set strategy.options.feedback=verifier"
                )
            require_blind(scorer, config, "self-refine feedback (strategy.scorer)")
            return scorer
        if scorer is not None:
            raise ConfigError(
                "strategy.scorer is set but strategy.options.feedback=verifier does not use it"
            )
        if options.feedback_sees_answer and not config.oracle:
            raise ConfigError(
                oracle_refusal("strategy.options.feedback_sees_answer=true", "self-refine feedback")
            )
        require_blind(verifier, config, "self-refine feedback (feedback: verifier)")
        return verifier

    def solve(self, batch: Batch) -> None:
        verifier, config = batch.verifier, batch.config
        options = self.options(config)
        checker = self.feedback_verifier(options, verifier, config)
        # an oracle checker that is the run's verifier: its verdicts are the run's, reused
        reuse = checker is verifier and config.oracle
        refine = load_refine_prompt(options.refine_prompt)
        started = time.perf_counter()
        states = [_Problem(p) for p in batch.problems]
        active = list(range(len(states)))
        for round_ in range(options.max_rounds + 1):
            if not active:
                break
            requests = [self._request(states[i], round_, config, refine, options) for i in active]
            outputs = batch.generator.generate(requests)
            completions = [out[0] if out else Completion("", "error", 0, 0) for out in outputs]
            graded = verifier.verify_batch(
                [(states[i].problem, c) for i, c in zip(active, completions, strict=True)]
            )
            if reuse:
                checked = graded
            else:
                checked = checker.verify_batch(
                    [
                        (checker_view(states[i].problem, config), c)
                        for i, c in zip(active, completions, strict=True)
                    ]
                )
            still: list[int] = []
            for k, i in enumerate(active):
                state = states[i]
                state.usage.engine_calls += 1
                state.usage.verifier_calls += 1 if reuse else 2
                charge(state.usage, outputs[k])
                if not reuse:
                    charge_scorer(state.usage, [checked[k]])
                state.steps.append(Step(requests[k], [completions[k]], [graded[k]]))
                state.attempts.append((completions[k].text, checked[k]))
                reason = stop_reason(
                    checked[k], round_, options, config.budget.exhausted(state.usage)
                )
                state.tree.append(self._node(round_, checked[k], graded[k], reason))
                if reason is None:
                    still.append(i)
                    continue
                batch.finish(i, self._trace(state, verifier, reason, started))
            active = still

    @staticmethod
    def _request(
        state: _Problem,
        round_: int,
        config: StrategyConfig,
        refine: PromptTemplate,
        options: Options,
    ) -> GenerationRequest:
        problem = state.problem
        if round_ == 0:
            messages = config.prompt.render(problem)
            seed = problem_seed(config.seed, problem.id)
        else:
            assert state.attempts
            shown = state.attempts if options.history == "full" else state.attempts[-1:]
            messages = refine_messages(
                config.prompt, refine, problem, shown, options.feedback_detail
            )
            seed = problem_seed(config.seed, f"{problem.id}/refine-{round_}")
        return GenerationRequest(
            messages=messages, sampling=dataclasses.replace(config.sampling, n=1, seed=seed)
        )

    @staticmethod
    def _node(
        round_: int, checked: Verdict, graded: Verdict, reason: StopReason | None
    ) -> dict[str, Any]:
        node: dict[str, Any] = {
            "id": round_,
            "parent": round_ - 1 if round_ else None,
            "answer": graded.answer,
            "feedback_status": checked.status,
            "feedback_score": checked.score,
            "feedback": checked.feedback,
            "feedback_details": checked.details,
        }
        if reason is not None:
            node["stop"] = reason
        return node

    @staticmethod
    def _trace(state: _Problem, verifier: Verifier, reason: StopReason, started: float) -> Trace:
        graded = [step.verdicts[0] for step in state.steps]
        final = graded[-1]
        verdict = dataclasses.replace(
            final, details={**final.details, "rounds": len(graded), "stop": reason}
        )
        state.usage.wall_time_s = time.perf_counter() - started
        return Trace(
            problem=state.problem,
            steps=state.steps,
            prediction=final.answer,
            verdict=verdict,
            usage=state.usage,
            clusters=cluster_answers(verifier, state.problem, graded),
            tree=state.tree,
            # the rounds refine one answer, they are not draws: the final answer is the candidate
            candidates=[len(graded) - 1],
        )
