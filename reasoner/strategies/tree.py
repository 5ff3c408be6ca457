"""What every step-level search shares: a tree of reasoning steps, one engine call per search
round for all problems and all nodes, one scorer call per round, and the final verdict.

A step is a continuation of a raw prompt (the chat rendered once to text, plus the partial
solution so far) that stops on a delimiter ("\\n\\n" by default), as search-and-learn extends its
beams: every node of every tree is then a plain prefix extension of its parent, which is what
lets the engine's prefix cache serve the shared part instead of prefilling it again.

The Trace of a search holds the tree (one dict per node, `Tree.to_dicts`) and one Step: the
root request, and the complete solutions found (the candidates) with the run verifier's
verdict of each, so that pass@k and maj@k count the candidates. Each node's request is the
root prompt followed by the texts on its path, so the tree records every prompt sent.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.strategies.base import (
    StrategyConfig,
    blind,
    charge_call,
    charge_scorer,
    problem_seed,
)
from reasoner.strategies.voting import cluster_answers, majority_cluster
from reasoner.types import (
    Completion,
    FinishReason,
    GenerationRequest,
    Problem,
    Step,
    Trace,
    Usage,
    Verdict,
)
from reasoner.verifiers.base import Verifier

#: the markers of a final answer in the `math_cot` style of prompt
DEFAULT_ANSWER_PATTERN = r"\\boxed\s*\{|####|\b[Tt]he\s+(?:final\s+)?answer\s+is\b"

Selection = Literal["max-score", "majority", "weighted-majority"]


class StepOptions(BaseModel):
    """The knobs of step generation that every tree search shares."""

    model_config = ConfigDict(extra="forbid")
    #: a step ends where the model writes this (a stop string; not part of the step's text)
    delimiter: str = Field("\n\n", min_length=1)
    #: steps on one path; the last step is generated to the end, without the delimiter
    max_depth: int = Field(8, ge=1)
    #: tokens one step may take; None: `sampling.max_tokens`
    step_max_tokens: int | None = Field(None, ge=1)
    #: a step that matches this regex holds the final answer, and ends its path
    answer_pattern: str = DEFAULT_ANSWER_PATTERN

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


@dataclass
class Node:
    """One reasoning step. `solution` is the text of the path from the root to here, steps
    joined by the delimiter: what a scorer judges and what the next step continues."""

    id: int
    parent: int | None
    depth: int
    text: str
    solution: str
    terminal: bool = False
    finish_reason: FinishReason | None = None
    tokens: int = 0  # completion tokens of this step
    round: int | None = None  # the search round (engine call) that generated it
    children: list[int] = field(default_factory=list)
    score: float | None = None  # the scorer's score of `solution`; None: not scored, or failed
    score_error: str | None = None  # the scorer's feedback when it failed on this node
    visits: int = 0
    value_sum: float = 0.0
    prior: float = 1.0
    reward: float | None = None  # MCTS: this node's own evaluation
    rollout: str | None = None  # MCTS: the text a rollout added after `solution`
    candidate: bool = False  # a complete solution verified at the end
    status: str | None = None  # the run verifier's verdict on it, if a candidate
    answer: str | None = None
    rollout_status: str | None = None  # the run verifier's verdict on solution + rollout
    rollout_answer: str | None = None
    chosen: bool = False
    finish: bool = False  # generated after the search, to complete the chosen path

    @property
    def value(self) -> float:
        """Mean backed-up value (Q); 0 before any visit."""
        return self.value_sum / self.visits if self.visits else 0.0

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": self.id,
            "parent": self.parent,
            "depth": self.depth,
            "text": self.text,
            "score": self.score,
            "visits": self.visits,
            "value": self.value,
            "terminal": self.terminal,
            "finish_reason": self.finish_reason,
            "tokens": self.tokens,
            "round": self.round,
        }
        optional = {
            "score_error": self.score_error,
            "prior": self.prior if self.parent is not None and self.prior != 1.0 else None,
            "reward": self.reward,
            "rollout": self.rollout,
            "status": self.status,
            "answer": self.answer,
            "rollout_status": self.rollout_status,
            "rollout_answer": self.rollout_answer,
        }
        row.update({k: v for k, v in optional.items() if v is not None})
        for flag in ("candidate", "chosen", "finish"):
            if getattr(self, flag):
                row[flag] = True
        return row


class Tree:
    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.nodes: list[Node] = [Node(id=0, parent=None, depth=0, text="", solution="")]

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: Node, text: str, **fields: Any) -> Node:
        solution = parent.solution + self.delimiter + text if parent.solution else text
        node = Node(len(self.nodes), parent.id, parent.depth + 1, text, solution, **fields)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.children]

    def path(self, node: Node) -> list[Node]:
        """Root first."""
        nodes = [node]
        while nodes[-1].parent is not None:
            nodes.append(self.nodes[nodes[-1].parent])
        return nodes[::-1]

    def continuation(self, node: Node) -> str:
        """The text after the rendered chat that the next step continues."""
        return node.solution + self.delimiter if node.solution else ""

    def path_tokens(self, node: Node) -> int:
        return sum(n.tokens for n in self.path(node))

    def to_dicts(self) -> list[dict[str, Any]]:
        return [node.to_dict() for node in self.nodes]


@dataclass
class ProblemSearch:
    """One problem's search: its tree, its rendered prompt, and the compute it has spent."""

    problem: Problem
    root_prompt: str
    request: GenerationRequest  # the root request, as the Trace records it
    tree: Tree
    started: float
    usage: Usage = field(default_factory=Usage)
    done: bool = False
    prompt_tokens: int = 0  # the rendered chat's length in tokens, once known
    state: dict[str, Any] = field(default_factory=dict)  # the strategy's own per-problem state
    oracle: bool = False  # the scorer sees the gold (StrategyConfig.oracle)


def start_searches(
    problems: Sequence[Problem], generator: Generator, config: StrategyConfig, delimiter: str
) -> list[ProblemSearch]:
    started = time.perf_counter()
    searches = []
    for problem in problems:
        prompt = generator.render_chat(config.prompt.render(problem))
        request = GenerationRequest(prompt=prompt, sampling=config.sampling)
        search = ProblemSearch(problem, prompt, request, Tree(delimiter), started)
        search.oracle = config.oracle
        searches.append(search)
    return searches


@dataclass(frozen=True)
class Expansion:
    """A request for `n` continuations of `node`. `to_end`: ignore the delimiter and write to
    the end of the solution (the last step, a rollout, completing a chosen path)."""

    search: ProblemSearch
    node: Node
    n: int
    to_end: bool = False
    temperature: float | None = None  # None: the run's sampling temperature
    purpose: str = "expand"  # part of the request's seed: a node's rollout is not its step
    logprobs: bool = False  # ask for the sampled tokens' log-probs (MCTS priors)


class StepEngine:
    """Turns the expansions of a round, across all problems, into one engine call, and charges
    each problem for its own requests."""

    def __init__(self, generator: Generator, config: StrategyConfig, options: StepOptions) -> None:
        self.generator = generator
        self.config = config
        self.options = options
        self.answer_re = re.compile(options.answer_pattern)
        self.rounds = 0

    def request(self, expansion: Expansion) -> GenerationRequest:
        s = self.config.sampling
        node, search = expansion.node, expansion.search
        stop = s.stop if expansion.to_end else (self.options.delimiter, *s.stop)
        seed_key = f"{search.problem.id}/{node.id}/{expansion.purpose}"
        return GenerationRequest(
            prompt=search.root_prompt + search.tree.continuation(node),
            sampling=dataclasses.replace(
                s,
                n=expansion.n,
                temperature=s.temperature
                if expansion.temperature is None
                else expansion.temperature,
                max_tokens=s.max_tokens
                if expansion.to_end
                else (self.options.step_max_tokens or s.max_tokens),
                stop=tuple(dict.fromkeys(stop)),
                seed=problem_seed(self.config.seed, seed_key),
                logprobs=0 if expansion.logprobs else s.logprobs,
            ),
        )

    def generate(self, expansions: Sequence[Expansion]) -> list[list[Completion]]:
        """One engine call for the whole round; nothing is sent when there is nothing to do."""
        if not expansions:
            return []
        results = self.generator.generate([self.request(e) for e in expansions])
        self.rounds += 1
        charge_call((e.search.usage, c) for e, c in zip(expansions, results, strict=True))
        for expansion, completions in zip(expansions, results, strict=True):
            if completions and expansion.node.id == 0:
                expansion.search.prompt_tokens = completions[0].prompt_tokens
        return results

    def is_final(self, text: str) -> bool:
        return bool(self.answer_re.search(text))

    def add_step(self, expansion: Expansion, completion: Completion) -> Node:
        """The child that a completion of `expansion` makes: terminal when it holds an
        answer, is empty (the model ended instead of starting a step), was cut by the token
        limit, was written to the end, or sits at the maximum depth."""
        node, tree = expansion.node, expansion.search.tree
        text = completion.text
        terminal = (
            expansion.to_end
            or not text.strip()
            or completion.finish_reason != "stop"
            or node.depth + 1 >= self.options.max_depth
            or self.is_final(text)
        )
        return tree.add(
            node,
            text,
            terminal=terminal,
            finish_reason=completion.finish_reason,
            tokens=completion.completion_tokens,
            round=self.rounds - 1,
        )

    def last_step(self, node: Node) -> bool:
        """Whether a child of `node` would be the path's last step (generated to the end)."""
        return node.depth + 1 >= self.options.max_depth


def score_texts(scorer: Verifier, items: Sequence[tuple[ProblemSearch, str]]) -> list[Verdict]:
    """The scorer's verdicts on partial or complete solutions, blind to the gold answer, in one
    batched call (one engine call for an LLM judge)."""
    if not items:
        return []
    verdicts = scorer.verify_batch(
        [
            (
                search.problem if search.oracle else blind(search.problem),
                Completion(text, "stop", search.prompt_tokens, 0),
            )
            for search, text in items
        ]
    )
    for (search, _), verdict in zip(items, verdicts, strict=True):
        search.usage.verifier_calls += 1
        charge_scorer(search.usage, [verdict])
    return verdicts


def verify_texts(verifier: Verifier, items: Sequence[tuple[ProblemSearch, str]]) -> list[Verdict]:
    """The run verifier's verdicts on solutions, against the gold answer, in one batched call:
    an oracle's reward (`strategy.oracle`), never a blind score."""
    verdicts = verifier.verify_batch(
        [(s.problem, Completion(text, "stop", s.prompt_tokens, 0)) for s, text in items]
    )
    for search, _ in items:
        search.usage.verifier_calls += 1
    return verdicts


def score_nodes(scorer: Verifier, items: Sequence[tuple[ProblemSearch, Node]]) -> None:
    """Sets each node's `score` to the scorer's score of its solution so far; a scorer error
    leaves the score unset and is kept on the node."""
    verdicts = score_texts(scorer, [(search, node.solution) for search, node in items])
    for (_, node), verdict in zip(items, verdicts, strict=True):
        if verdict.status == "error":
            node.score_error = verdict.feedback or "scorer error"
        else:
            node.score = verdict.score


def rank_score(node: Node) -> float:
    """A node the scorer failed on ranks below every scored one, rather than tying with a
    node it really scored 0."""
    return node.score if node.score is not None else -1.0


@dataclass
class Candidate:
    """A complete solution (or, where the budget ran out first, the best partial one)."""

    node: Node
    text: str
    tokens: int
    value: float | None = None  # its own score where it is not the node's (a rollout)

    @property
    def score(self) -> float:
        return self.value if self.value is not None else rank_score(self.node)


def node_candidate(search: ProblemSearch, node: Node) -> Candidate:
    return Candidate(node, node.solution, search.tree.path_tokens(node))


Picker = Callable[[list[Candidate], list[int]], int]


def pick(selection: Selection) -> Picker:
    """The final-answer rule: the scorer's best candidate, the most common answer, or the
    answer whose candidates' scores sum highest (search-and-learn's weighted best-of-N)."""

    def best(candidates: list[Candidate], indices: Sequence[int]) -> int:
        return max(indices, key=lambda i: (candidates[i].score, -i))

    def chosen(candidates: list[Candidate], clusters: list[int]) -> int:
        everyone = range(len(candidates))
        if selection == "max-score":
            return best(candidates, everyone)
        if selection == "majority":
            winner = majority_cluster(clusters, len(clusters))
        else:
            totals: dict[int, float] = {}
            for candidate, cluster in zip(candidates, clusters, strict=True):
                if cluster >= 0:
                    totals[cluster] = totals.get(cluster, 0.0) + max(candidate.score, 0.0)
            winner = max(totals, key=lambda c: (totals[c], -c)) if totals else None
        if winner is None:  # no candidate has an answer
            return best(candidates, everyone)
        return best(candidates, [i for i, c in enumerate(clusters) if c == winner])

    return chosen


def finalize(
    search: ProblemSearch,
    candidates: list[Candidate],
    verifier: Verifier,
    picker: Picker,
) -> Trace:
    """The run verifier's verdict on every candidate (the samples of pass@k), their answer
    clusters (maj@k), and the picked candidate's verdict as the problem's."""
    tree = search.tree
    if not candidates:  # nothing was generated (a budget spent before the first round)
        candidates = [node_candidate(search, tree.root)]
    completions = [
        Completion(c.text, c.node.finish_reason or "stop", search.prompt_tokens, c.tokens)
        for c in candidates
    ]
    verdicts = verifier.verify_batch([(search.problem, c) for c in completions])
    search.usage.verifier_calls += len(candidates)
    clusters = cluster_answers(verifier, search.problem, verdicts)
    index = picker(candidates, clusters)
    for candidate, verdict in zip(candidates, verdicts, strict=True):
        node = candidate.node
        if candidate.text == node.solution:
            node.candidate, node.status, node.answer = True, verdict.status, verdict.answer
        else:
            node.rollout_status, node.rollout_answer = verdict.status, verdict.answer
    candidates[index].node.chosen = True
    search.usage.wall_time_s = time.perf_counter() - search.started
    search.done = True
    return Trace(
        problem=search.problem,
        steps=[Step(search.request, completions, verdicts)],
        prediction=verdicts[index].answer,
        verdict=verdicts[index],
        usage=search.usage,
        clusters=clusters,
        tree=tree.to_dicts(),
    )


def check_temperature(strategy: str, temperature: float, samples: int, what: str) -> None:
    """Refuse several samples of one prompt at temperature 0: they are one sample repeated."""
    if samples > 1 and temperature <= 0:
        raise ConfigError(
            f"{strategy} samples {samples} {what} per node and needs sampling.temperature > 0 "
            f"(got {temperature})"
        )
