"""Monte Carlo tree search over reasoning steps, batched across trees (AlphaMath, rStar-Math).

One simulation (`backup: leaf`, the default, as AlphaMath and rStar-Math count them): select a
leaf by PUCT, expand it with K sampled next steps, evaluate ONE thing (the leaf: its partial
solution by the scorer, or one rollout from it) and back that one value up the path, so every
node on the path gains exactly one visit. Hence N(node) = 1 + sum of N(children) for every
expanded node, unexpanded steps have N = 0, and a finished step counts one visit each time a
simulation ends on it. The root is expanded without an evaluation (its value is never
compared with anything) and backs up 0. With `backup: children` (the older behaviour) every
new step is evaluated and backed up, so a parent gains K visits per simulation.

PUCT's prior of a new step is a softmax over its siblings of the policy's log-prob of the step
(`prior: logprob`, the default): the mean token log-prob at `prior_temperature` 1 reproduces
AlphaMath's exp(cumulative_logprob / len(token_ids)) normalised over the siblings; the sum
favours short steps. `prior: uniform` gives every sibling 1/K (the bonus then ignores the policy).

Each round runs the selection of every problem's tree (one leaf, or several kept apart by
virtual loss), then expands all selected leaves in ONE engine call and evaluates them in ONE
scorer call.

Evaluation is the scorer's score of the partial solution (a process reward model, a judge),
or a rollout to a complete solution whose reward is the scorer's score of it or, with
`rollout_reward: verifier`, the run verifier's verdict against the gold answer. That last one
is an oracle: it searches with the answer key, so its accuracy measures the search, not the
model, and is only for studying search. Rollouts are `continuation` (the expansion samples are
not stopped at the delimiter: the first step becomes the child, the rest is its rollout, and
no extra engine call is made), or `greedy` / `sampled` (a separate rollout call per round).

The final answer follows the most visited (or most valued) path, or is the majority answer
of all complete solutions found; a chosen path that ends before an answer is completed
greedily in one more batched call. Every function of the search is a method or a module
function, so a subclass can replace any part: the PUCT score, the selection, the evaluation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from reasoner.errors import ConfigError
from reasoner.strategies.base import (
    Batch,
    Strategy,
    StrategyConfig,
    oracle_refusal,
    parse_options,
    require_blind,
)
from reasoner.strategies.tree import (
    Candidate,
    Expansion,
    Node,
    ProblemSearch,
    StepEngine,
    StepOptions,
    Tree,
    check_temperature,
    finalize,
    node_candidate,
    pick,
    score_nodes,
    score_texts,
    start_searches,
    verify_texts,
)
from reasoner.types import Completion, Trace, Verdict
from reasoner.verifiers.base import Verifier

FinalSelection = Literal["max-visits", "max-value", "majority"]
ROLLOUT_KEYS = {"rollout_policy", "rollout_temperature", "rollout_reward"}
PRIOR_KEYS = {"prior_logprob", "prior_temperature"}


class MCTSOptions(StepOptions):
    #: simulations per problem (one leaf selected, expanded, evaluated and backed up)
    simulations: int = Field(16, ge=1)
    #: K: next steps sampled when a leaf is expanded
    expand_k: int = Field(3, ge=1)
    #: the exploration constant of PUCT
    c_puct: float = Field(1.0, ge=0)
    #: leaves selected per tree per round, kept apart by virtual loss
    leaves_per_tree: int = Field(1, ge=1)
    virtual_loss: float = Field(1.0, ge=0)
    evaluation: Literal["scorer", "rollout"] = "scorer"
    rollout_policy: Literal["continuation", "greedy", "sampled"] = "continuation"
    #: temperature of `sampled` rollouts; None: the run's temperature
    rollout_temperature: float | None = Field(None, ge=0)
    #: "verifier" checks rollouts against the gold answer: an oracle, for studying search only
    rollout_reward: Literal["scorer", "verifier"] = "scorer"
    final_selection: FinalSelection = "max-visits"
    #: complete the chosen path greedily when it ends before an answer
    complete_chosen: bool = True
    #: "logprob": PUCT priors from the policy's step log-probs; "uniform": 1/K per sibling
    prior: Literal["logprob", "uniform"] = "logprob"
    #: a step's log-prob for its prior: "mean" per token (AlphaMath) or "sum" (favours short)
    prior_logprob: Literal["mean", "sum"] = "mean"
    #: temperature of the softmax over siblings' step log-probs; higher flattens the priors
    prior_temperature: float = Field(1.0, gt=0)
    #: "leaf": one value (the selected leaf's) backed up per simulation; "children": all K
    backup: Literal["leaf", "children"] = "leaf"


def step_logprob(
    completion: Completion, how: Literal["mean", "sum"], chars: int | None = None
) -> float | None:
    """The log-prob of a sampled step: summed over its tokens, or their mean. `chars`: only the
    tokens that write the first `chars` characters (a continuation sample's first step).
    None when the backend returned no log-probs."""
    if not completion.logprobs:
        return None
    values, written = [], 0
    for token in completion.logprobs:
        if chars is not None and written >= chars:
            break
        values.append(token.logprob)
        written += len(token.token)
    return sum(values) / len(values) if how == "mean" else sum(values)


def softmax_priors(logprobs: Sequence[float], temperature: float) -> list[float]:
    """Siblings' priors: a softmax of their step log-probs at `temperature`."""
    top = max(logprobs)
    weights = [math.exp((lp - top) / temperature) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def puct(q: float, prior: float, parent_visits: int, child_visits: int, c_puct: float) -> float:
    """AlphaZero's PUCT: the child's mean value plus an exploration bonus that grows with the
    parent's visits and shrinks with the child's own."""
    return q + c_puct * prior * math.sqrt(parent_visits) / (1 + child_visits)


def select_child(tree: Tree, node: Node, c_puct: float) -> Node:
    """The child with the highest PUCT score; the earliest on a tie."""
    children = tree.children(node)
    scores = [puct(c.value, c.prior, node.visits, c.visits, c_puct) for c in children]
    return children[max(range(len(children)), key=lambda i: (scores[i], -i))]


def select_leaf(tree: Tree, c_puct: float) -> Node:
    """Descend by PUCT from the root to a node that is unexpanded or terminal."""
    node = tree.root
    while node.children and not node.terminal:
        node = select_child(tree, node, c_puct)
    return node


def backup(tree: Tree, node: Node, value: float) -> None:
    """Count a visit with `value` on every node from `node` up to the root."""
    for on_path in tree.path(node):
        on_path.visits += 1
        on_path.value_sum += value


def virtual_loss(tree: Tree, node: Node, loss: float, sign: int = 1) -> None:
    """A pending visit that counts as a loss, so the next selection in the same round avoids
    this path; `sign=-1` takes it back."""
    for on_path in tree.path(node):
        on_path.visits += sign
        on_path.value_sum -= sign * loss


def best_path_end(tree: Tree, by: Literal["max-visits", "max-value"]) -> Node:
    """Follow the most visited (ties: higher value) or highest-valued (ties: more visits)
    child from the root to a node without children."""
    node = tree.root
    while node.children:
        children = tree.children(node)

        def key(i: int, children: list[Node] = children) -> tuple[float, float, int]:
            c = children[i]
            first, second = (c.visits, c.value) if by == "max-visits" else (c.value, c.visits)
            return (first, second, -i)

        node = children[max(range(len(children)), key=key)]
    return node


def set_reward(node: Node, verdict: Verdict) -> bool:
    """The node's reward from an evaluation's verdict; a failed evaluation (`error`) rewards 0
    and keeps its feedback on the node. Whether it failed."""
    failed = verdict.status == "error"
    node.reward = 0.0 if failed else verdict.score
    if failed:
        node.score_error = verdict.feedback or "evaluation error"
    return failed


def rollout_text(tree: Tree, node: Node) -> str:
    return node.solution + tree.delimiter + node.rollout if node.rollout else node.solution


class MCTS(Strategy):
    name: ClassVar[str] = "mcts"
    default_temperature: ClassVar[float] = 0.7
    needs_scorer: ClassVar[bool] = True

    def options(self, config: StrategyConfig) -> MCTSOptions:
        return parse_options(MCTSOptions, config.options, self.name)

    def validate(self, config: StrategyConfig) -> None:
        options = self.options(config)
        if config.n != 1:
            raise ConfigError(
                f"{self.name} takes its width from strategy.options.expand_k and simulations; "
                f"strategy.n must be 1 (got {config.n})"
            )
        stray = sorted(ROLLOUT_KEYS & options.model_fields_set)
        if options.evaluation == "scorer" and stray:
            raise ConfigError(
                f"strategy.options.{stray[0]} applies to evaluation: rollout, but "
                "strategy.options.evaluation is 'scorer'"
            )
        stray = sorted(PRIOR_KEYS & options.model_fields_set)
        if options.prior == "uniform" and stray:
            raise ConfigError(
                f"strategy.options.{stray[0]} applies to prior: logprob, but "
                "strategy.options.prior is 'uniform'"
            )
        check_temperature(self.name, config.sampling.temperature, options.expand_k, "next steps")

    def uses_scorer(self, options: MCTSOptions) -> bool:
        return options.evaluation == "scorer" or options.rollout_reward == "scorer"

    # -- one round ------------------------------------------------------------------------
    def select(self, search: ProblemSearch, options: MCTSOptions) -> list[Node]:
        """Up to `leaves_per_tree` distinct leaves under virtual loss: unexpanded steps, and
        finished steps not yet evaluated; a finished step already evaluated is a finished
        simulation, backed up at once."""
        tree, state = search.tree, search.state
        leaves: list[Node] = []
        while state["simulations"] < options.simulations and len(leaves) < options.leaves_per_tree:
            leaf = select_leaf(tree, options.c_puct)
            if any(leaf is pending for pending in leaves):  # all paths lead to a pending leaf
                break
            state["simulations"] += 1
            if leaf.terminal and leaf.reward is not None:
                backup(tree, leaf, leaf.reward)
                continue
            leaves.append(leaf)
            virtual_loss(tree, leaf, options.virtual_loss)
        for leaf in leaves:
            virtual_loss(tree, leaf, options.virtual_loss, sign=-1)
        return leaves

    def expansion(
        self, search: ProblemSearch, leaf: Node, options: MCTSOptions, engine: StepEngine
    ) -> Expansion:
        continuation = options.evaluation == "rollout" and options.rollout_policy == "continuation"
        return Expansion(
            search,
            leaf,
            options.expand_k,
            to_end=engine.last_step(leaf) or continuation,
            logprobs=options.prior == "logprob",
        )

    def add_children(
        self,
        expansion: Expansion,
        completions: list[Completion],
        options: MCTSOptions,
        engine: StepEngine,
    ) -> list[Node]:
        """The new steps, with their priors; a continuation sample is split at its first
        delimiter into the step and its rollout."""
        leaf, delimiter = expansion.node, options.delimiter
        children, logprobs = [], []
        for completion in completions:
            text = completion.text
            split = (
                expansion.to_end
                and not engine.last_step(leaf)
                and options.evaluation == "rollout"
                and options.rollout_policy == "continuation"
                and delimiter in text
            )
            if split:
                step, rest = text.split(delimiter, 1)
                child = engine.add_step(
                    dataclasses.replace(expansion, to_end=False),
                    dataclasses.replace(completion, text=step, finish_reason="stop"),
                )
                if not child.terminal and rest.strip():
                    child.rollout = rest
            else:
                child = engine.add_step(expansion, completion)
            children.append(child)
            logprobs.append(
                step_logprob(completion, options.prior_logprob, len(step) if split else None)
            )
        self.set_priors(children, logprobs, options)
        return children

    def set_priors(
        self, children: list[Node], logprobs: list[float | None], options: MCTSOptions
    ) -> None:
        """Softmax priors over the siblings' step log-probs; uniform where the prior is
        uniform or the backend returned no log-probs."""
        known = [lp for lp in logprobs if lp is not None]
        if options.prior == "uniform" or not children or len(known) < len(children):
            for child in children:
                child.prior = 1.0 / len(children)
            return
        for child, prior in zip(
            children, softmax_priors(known, options.prior_temperature), strict=True
        ):
            child.prior = prior

    def rollouts(
        self,
        children: Sequence[tuple[ProblemSearch, Node]],
        options: MCTSOptions,
        engine: StepEngine,
    ) -> None:
        """A separate rollout to the end from each open new step, in one engine call."""
        temperature = 0.0 if options.rollout_policy == "greedy" else options.rollout_temperature
        rollouts = [
            Expansion(s, n, 1, to_end=True, temperature=temperature, purpose="rollout")
            for s, n in children
            if not n.terminal
        ]
        for rollout, completions in zip(rollouts, engine.generate(rollouts), strict=True):
            rollout.node.rollout = completions[0].text if completions else ""

    def evaluate(
        self,
        children: Sequence[tuple[ProblemSearch, Node]],
        options: MCTSOptions,
        scorer: Verifier | None,
        verifier: Verifier,
    ) -> None:
        """Each new step's reward, in one scorer (or verifier) call for all trees."""
        if not children:
            return
        if options.evaluation == "scorer":
            assert scorer is not None
            score_nodes(scorer, children)
            for _, node in children:
                node.reward = node.score if node.score is not None else 0.0
            return
        texts = [(s, rollout_text(s.tree, n)) for s, n in children]
        if options.rollout_reward == "scorer":
            assert scorer is not None
            verdicts = score_texts(scorer, texts)
        else:  # the oracle: the run verifier with the gold answer
            verdicts = verify_texts(verifier, texts)
        for (_, node), verdict in zip(children, verdicts, strict=True):
            failed = set_reward(node, verdict)
            if node.terminal and node.rollout is None and options.rollout_reward == "scorer":
                node.score = None if failed else verdict.score

    def leaf_text(self, tree: Tree, leaf: Node, children: list[Node], options: MCTSOptions) -> str:
        """What evaluates a selected leaf (`backup: leaf`): its partial solution (scorer), or
        one rollout from it: the first of its continuation samples (a sample of the policy
        from the leaf), or its own greedy / sampled rollout."""
        if options.evaluation == "scorer" or leaf.terminal:
            return leaf.solution
        if options.rollout_policy == "continuation" and children:
            return rollout_text(tree, children[0])
        return rollout_text(tree, leaf)

    def evaluate_leaves(
        self,
        items: Sequence[tuple[ProblemSearch, Node, str]],
        options: MCTSOptions,
        scorer: Verifier | None,
        verifier: Verifier,
    ) -> None:
        """Each selected leaf's reward from its text, in one scorer (or verifier) call."""
        if not items:
            return
        texts = [(s, text) for s, _, text in items]
        if options.evaluation == "scorer" or options.rollout_reward == "scorer":
            assert scorer is not None
            verdicts = score_texts(scorer, texts)
        else:  # the oracle: the run verifier with the gold answer
            verdicts = verify_texts(verifier, texts)
        for (_, node, text), verdict in zip(items, verdicts, strict=True):
            if (
                not set_reward(node, verdict)
                and text == node.solution
                and (options.evaluation == "scorer" or options.rollout_reward == "scorer")
            ):
                node.score = verdict.score

    # -- the answer ---------------------------------------------------------------------------
    def complete_solutions(self, search: ProblemSearch) -> list[Candidate]:
        """Every complete solution in the tree: terminal steps and rollouts."""
        tree, out = search.tree, []
        for node in tree.nodes[1:]:
            if node.terminal:
                out.append(node_candidate(search, node))
            elif node.rollout is not None:
                out.append(
                    Candidate(node, rollout_text(tree, node), tree.path_tokens(node), node.reward)
                )
        return out

    def choose(self, search: ProblemSearch, options: MCTSOptions) -> Node:
        """The node whose solution answers: the end of the best path."""
        by: Literal["max-visits", "max-value"] = (
            "max-value" if options.final_selection == "max-value" else "max-visits"
        )
        return best_path_end(search.tree, by)

    def conclude(
        self, search: ProblemSearch, options: MCTSOptions, verifier: Verifier, may_complete: bool
    ) -> Trace | None:
        """The Trace, or None when the chosen path must first be completed."""
        candidates = self.complete_solutions(search)
        if options.final_selection == "majority" and candidates:
            return finalize(search, candidates, verifier, pick("majority"))
        end = self.choose(search, options)
        if not end.terminal and end.rollout is None and options.complete_chosen and may_complete:
            search.state["complete_from"] = end
            return None
        chosen = next((c for c in candidates if c.node is end), None)
        if chosen is None:  # a path cut short by the budget: its partial solution answers
            chosen = node_candidate(search, end)
            candidates.append(chosen)
        index = candidates.index(chosen)
        return finalize(search, candidates, verifier, lambda _c, _k: index)

    def solve(self, batch: Batch) -> None:
        verifier, config = batch.verifier, batch.config
        self.validate(config)
        options = self.options(config)
        scorer = config.scorer
        if scorer is None and self.uses_scorer(options):
            raise ConfigError(f"{self.name} needs strategy.scorer (e.g. judge, reward-model)")
        if scorer is not None and self.uses_scorer(options):
            require_blind(scorer, config, f"the {self.name} scorer")
        oracle_reward = options.evaluation == "rollout" and options.rollout_reward == "verifier"
        if oracle_reward and not config.oracle:
            raise ConfigError(
                oracle_refusal("strategy.options.rollout_reward=verifier", "the rollout reward")
            )
        engine = StepEngine(batch.generator, config, options)
        searches = start_searches(batch.problems, batch.generator, config, options.delimiter)
        for search in searches:
            search.state.update(simulations=0, complete_from=None)

        def emit(index: int, trace: Trace | None) -> None:
            if trace is not None:
                batch.finish(index, trace)

        while True:
            for index, search in enumerate(searches):
                if search.done or search.state["complete_from"] is not None:
                    continue
                spent = config.budget.exhausted(search.usage)
                if spent or search.state["simulations"] >= options.simulations:
                    emit(index, self.conclude(search, options, verifier, not spent))
            completing = [
                (i, s) for i, s in enumerate(searches) if s.state["complete_from"] is not None
            ]
            searching = [s for s in searches if not s.done and s.state["complete_from"] is None]
            if not completing and not searching:
                break
            expansions = [
                Expansion(s, s.state["complete_from"], 1, True, 0.0, "complete")
                for _, s in completing
            ]
            selected: list[tuple[ProblemSearch, Node, list[Node]]] = []
            for search in searching:
                for leaf in self.select(search, options):
                    if leaf.terminal:  # a finished step, evaluated below, not expanded
                        selected.append((search, leaf, []))
                    else:
                        expansions.append(self.expansion(search, leaf, options, engine))
            results = engine.generate(expansions)
            new: list[tuple[ProblemSearch, Node]] = []
            for expansion, completions in zip(expansions, results, strict=True):
                if expansion.purpose == "complete":
                    continue
                children = self.add_children(expansion, completions, options, engine)
                new += [(expansion.search, child) for child in children]
                selected.append((expansion.search, expansion.node, children))
            done = len(completing)
            for (index, search), expansion, completions in zip(
                completing, expansions[:done], results[:done], strict=True
            ):
                node = engine.add_step(expansion, completions[0])
                node.finish = True
                search.state["complete_from"] = None
                emit(index, self.conclude(search, options, verifier, may_complete=False))
            if options.backup == "children":
                if options.evaluation == "rollout" and options.rollout_policy != "continuation":
                    self.rollouts(new, options, engine)
                self.evaluate(new, options, scorer, verifier)
                for search, node in new:
                    backup(search.tree, node, node.reward or 0.0)
                continue
            # one value per simulation: the selected leaf's (the root's is never compared)
            evaluated = [(s, leaf, kids) for s, leaf, kids in selected if leaf.parent is not None]
            if options.evaluation == "rollout" and options.rollout_policy != "continuation":
                self.rollouts([(s, leaf) for s, leaf, _ in evaluated], options, engine)
            self.evaluate_leaves(
                [
                    (s, leaf, self.leaf_text(s.tree, leaf, kids, options))
                    for s, leaf, kids in evaluated
                ],
                options,
                scorer,
                verifier,
            )
            for search, leaf, _ in selected:
                backup(search.tree, leaf, leaf.reward or 0.0)
