"""The tactic generator: K candidate next tactics per proof state, with their log-probabilities,
for every state of a search step in one engine call (the Generator contract's batching).

A candidate's score is the sum of its sampled tokens' log-probabilities (what ReProver's beam
and BFS-Prover rank by); the same tactic sampled twice is one candidate with its best score.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from reasoner.models.base import Generator
from reasoner.prompts import PromptTemplate
from reasoner.strategies.lean.environment import TacticState
from reasoner.types import Completion, GenerationRequest, Problem, SamplingParams

_FENCE = re.compile(r"```(?:lean4?)?[ \t]*\n?(.*?)(?:```|\Z)", re.S | re.I)
# `sorry` / `admit` close any goal without a proof; `native_decide` trusts the compiler.
_SORRY = re.compile(r"\b(?:sorry|admit)\b")
_NATIVE = re.compile(r"\bnative_decide\b")


@dataclass(frozen=True)
class TacticCandidate:
    tactic: str
    logprob: float
    sample: int  # which of the request's samples it came from (the best-scoring, if repeated)


@dataclass
class Proposal:
    """One state's request, what the engine returned, and the distinct tactics in it."""

    request: GenerationRequest
    completions: list[Completion]
    candidates: list[TacticCandidate]
    rejected: list[tuple[str, str]]  # (text, why) for samples that were no usable tactic


def clean_tactic(text: str) -> str | None:
    """The first line of tactic in a reply: inside a ```lean fence if there is one, without
    surrounding backticks; None for an empty reply."""
    text = text.rsplit("</think>", 1)[-1]
    fenced = [b for b in _FENCE.findall(text) if b.strip()]
    if fenced:
        text = fenced[0]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("```"):
            if len(stripped) > 1 and stripped[0] == stripped[-1] == "`":
                stripped = stripped.strip("`").strip()
            return stripped or None
    return None


def banned(tactic: str, allow_native_decide: bool = False) -> str | None:
    if _SORRY.search(tactic):
        return "`sorry`/`admit` prove nothing"
    if not allow_native_decide and _NATIVE.search(tactic):
        return "`native_decide` is not allowed"
    return None


def sequence_logprob(completion: Completion) -> float:
    """Sum of the sampled tokens' log-probabilities; 0.0 when the backend returned none."""
    if not completion.logprobs:
        return 0.0
    return sum(t.logprob for t in completion.logprobs)


def assemble_proof(formal_statement: str, tactics: Sequence[str]) -> str:
    """The tactic path as a completion the Lean verifier reads (rule 3 of its source rules):
    the tactics alone after a `:= by` statement, `by` and the indented tactics after `:=`."""
    body = "\n".join(tactics)
    if re.search(r"\bby\s*(?:sorry\s*)?$", formal_statement.rstrip()):
        return body
    return "by\n" + textwrap.indent(body, "  ")


class TacticGenerator:
    """Proposes tactics with any Generator; the prompt sees the problem (its formal statement,
    header, informal statement) and `goals`, the state's pretty-printed goals."""

    def __init__(
        self,
        generator: Generator,
        prompt: PromptTemplate,
        sampling: SamplingParams,
        num_tactics: int,
        allow_native_decide: bool = False,
    ) -> None:
        self.generator = generator
        self.prompt = prompt
        self.sampling = dataclasses.replace(
            sampling, n=num_tactics, logprobs=sampling.logprobs or 1
        )
        self.allow_native_decide = allow_native_decide

    def request(self, problem: Problem, state: TacticState, seed: int) -> GenerationRequest:
        messages = self.prompt.render(problem, goals=state.pp)
        return GenerationRequest(
            messages=messages, sampling=dataclasses.replace(self.sampling, seed=seed)
        )

    def propose(self, items: Sequence[tuple[Problem, TacticState, int]]) -> list[Proposal]:
        """One engine call for all (problem, state, seed) items."""
        requests = [self.request(problem, state, seed) for problem, state, seed in items]
        outputs = self.generator.generate(requests) if requests else []
        return [
            self._candidates(request, completions)
            for request, completions in zip(requests, outputs, strict=True)
        ]

    def _candidates(self, request: GenerationRequest, completions: list[Completion]) -> Proposal:
        best: dict[str, TacticCandidate] = {}
        rejected: list[tuple[str, str]] = []
        for sample, completion in enumerate(completions):
            tactic = clean_tactic(completion.text)
            if tactic is None:
                rejected.append((completion.text, "empty"))
                continue
            why = banned(tactic, self.allow_native_decide)
            if why is not None:
                rejected.append((tactic, why))
                continue
            key = " ".join(tactic.split())
            score = sequence_logprob(completion)
            if key not in best or score > best[key].logprob:
                best[key] = TacticCandidate(tactic, score, sample)
        ranked = sorted(best.values(), key=lambda c: -c.logprob)
        return Proposal(request, completions, ranked, rejected)
