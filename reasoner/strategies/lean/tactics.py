"""The tactic generator: K candidate next tactics per proof state, with their log-probabilities,
for every state of a search step in one engine call (the Generator contract's batching).

A candidate's score is the sum of the log-probabilities of the tokens that spell the tactic
itself (what ReProver's beam and BFS-Prover rank by, whose replies are the tactic alone): a chat
model's reply may wrap the tactic in a fence, an explanation or further lines, and those tokens
say nothing about the tactic, so they are left out. The same tactic sampled twice is one
candidate with its best score.
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


def tactic_span(text: str) -> tuple[int, int] | None:
    """Where the tactic is in a reply, as [start, end) character offsets: the first line of
    the first non-empty ```lean fence if there is one (else of the reply, after any
    `</think>`), without surrounding whitespace and backticks; None for an empty reply."""
    base = text.rfind("</think>")
    base = 0 if base < 0 else base + len("</think>")
    body = text[base:]
    for match in _FENCE.finditer(body):
        if match.group(1).strip():
            base, body = base + match.start(1), match.group(1)
            break
    offset = 0
    for line in body.splitlines(keepends=True):
        stripped = line.strip()
        if stripped and not stripped.startswith("```"):
            start = base + offset + len(line) - len(line.lstrip())
            end = start + len(stripped)
            if len(stripped) > 1 and stripped[0] == stripped[-1] == "`":  # `tactic`
                inner = stripped.strip("`")
                start += len(stripped) - len(stripped.lstrip("`"))
                start += len(inner) - len(inner.lstrip())
                end = start + len(inner.strip())
            return (start, end) if end > start else None
        offset += len(line)
    return None


def clean_tactic(text: str) -> str | None:
    """The first line of tactic in a reply (see `tactic_span`); None for an empty reply."""
    span = tactic_span(text)
    return None if span is None else text[span[0] : span[1]]


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


def span_logprob(completion: Completion, start: int, end: int) -> float:
    """Sum of the log-probabilities of the tokens that overlap completion.text[start:end]
    (a token straddling the edge counts: it is partly the tactic's); 0.0 without logprobs.

    Offsets come from the tokens' decoded text. Where that does not spell the completion's
    text (a multi-byte character split across tokens decodes to a replacement character), the
    tactic is looked up in the tokens' text; if it is not there, the whole reply's sum is the
    best estimate left."""
    if not completion.logprobs:
        return 0.0
    spelled = "".join(t.token for t in completion.logprobs)
    if spelled != completion.text:
        found = spelled.find(completion.text[start:end])
        if found < 0:
            return sequence_logprob(completion)
        start, end = found, found + (end - start)
    total, position = 0.0, 0
    for token in completion.logprobs:
        following = position + len(token.token)
        if following > start and position < end:
            total += token.logprob
        position = following
        if position >= end:
            break
    return total


def tactic_logprob(completion: Completion) -> float:
    """The log-probability of the tactic a reply holds (the tokens `clean_tactic` keeps)."""
    span = tactic_span(completion.text)
    return 0.0 if span is None else span_logprob(completion, *span)


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
            span = tactic_span(completion.text)
            if span is None:
                rejected.append((completion.text, "empty"))
                continue
            tactic = completion.text[span[0] : span[1]]
            why = banned(tactic, self.allow_native_decide)
            if why is not None:
                rejected.append((tactic, why))
                continue
            key = " ".join(tactic.split())
            score = span_logprob(completion, *span)
            if key not in best or score > best[key].logprob:
                best[key] = TacticCandidate(tactic, score, sample)
        ranked = sorted(best.values(), key=lambda c: -c.logprob)
        return Proposal(request, completions, ranked, rejected)
