"""Step-level beam search and diverse verifier tree search (DVTS), as in search-and-learn
(Beeching et al., 2024), and the frontier loop they share with tree-of-thought BFS.

Each problem holds one or more pools; a pool keeps a frontier of partial solutions, expands
every frontier node with several sampled next steps, has the scorer score the new steps and
keeps the best. Every round sends the frontier of every pool of every problem as one engine
call, then scores all the new steps in one scorer call.

- beam search (search-and-learn's `beam_search.py`): N first steps from the root (N =
  strategy.n); then the N/M best open partial solutions survive (M = beam_width) and the round's
  N samples are shared among them, M each, so the width stays N every round; when fewer than
  N/M survive (the others completed, or were copies), the survivors are duplicated back up to N,
  as search-and-learn does. A step that completes a solution leaves the beam for the completed
  list; the search ends when no beam is open or the depth is reached, and the final candidates
  are the N best-scored completed solutions (search-and-learn with `sort_completed`).
- DVTS (search-and-learn's `diverse_verifier_tree_search.py`): N/M independent subtrees of
  width M, each greedy (it keeps its single best step), so the N/M subtrees explore different
  solutions instead of collapsing onto one beam. A subtree stops when its best step completes a
  solution; the final candidates are each subtree's last round of M children (N in all), the
  best-scored one and its M-1 siblings, as search-and-learn returns them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

from pydantic import Field

from reasoner.errors import ConfigError
from reasoner.strategies.base import Batch, Strategy, StrategyConfig, parse_options, require_blind
from reasoner.strategies.tree import (
    Expansion,
    Node,
    ProblemSearch,
    Selection,
    StepEngine,
    StepOptions,
    check_temperature,
    finalize,
    node_candidate,
    pick,
    rank_score,
    score_nodes,
    start_searches,
)


@dataclass
class Pool:
    """A frontier that competes for its own `keep` slots."""

    index: int
    frontier: list[Node]
    expand: int  # next steps sampled per frontier node this round
    keep: int
    done: bool = False
    #: the new steps of the pool's latest round (kept once the pool is done)
    children: list[Node] = field(default_factory=list)


def spread(total: int, nodes: int) -> list[int]:
    """`total` samples shared among `nodes` frontier nodes as evenly as possible, the extra
    ones to the first (best-ranked): search-and-learn's `(active_beams * repeats)[:n]`, with
    each node's copies sent as one request of n samples rather than n requests of one."""
    return [total // nodes + (1 if i < total % nodes else 0) for i in range(nodes)]


def top_by_score(nodes: Sequence[Node], keep: int) -> list[Node]:
    """The `keep` best-scored nodes, earlier ones first among equals, one per distinct
    solution (the best-scored of its copies): two beams with the same text would only spend
    compute twice."""
    ranked = sorted(range(len(nodes)), key=lambda i: (-rank_score(nodes[i]), i))
    seen: set[str] = set()
    kept: list[Node] = []
    for i in ranked:
        if nodes[i].solution not in seen and len(kept) < keep:
            seen.add(nodes[i].solution)
            kept.append(nodes[i])
    return kept


StepOptionsT = TypeVar("StepOptionsT", bound=StepOptions)


class FrontierSearch(Strategy, Generic[StepOptionsT]):
    """The round loop; subclasses say how pools start, what survives and when to stop."""

    needs_scorer: ClassVar[bool] = True
    default_temperature: ClassVar[float] = 0.7
    #: the strategy's `strategy.options`, checked strictly (unknown keys are errors)
    options_model: type[StepOptionsT]

    def options(self, config: StrategyConfig) -> StepOptionsT:
        return parse_options(self.options_model, config.options, self.name)

    @abstractmethod
    def initial_pools(
        self, root: Node, options: StepOptionsT, config: StrategyConfig
    ) -> list[Pool]: ...

    @abstractmethod
    def survivors(
        self, pool: Pool, options: StepOptionsT, search: ProblemSearch, config: StrategyConfig
    ) -> tuple[list[Node], bool]:
        """The next frontier of `pool` from its `children`, and whether the pool is done."""

    @abstractmethod
    def next_expand(self, options: StepOptionsT) -> int:
        """Next steps per frontier node after the first round."""

    def expansion_counts(self, pool: Pool, config: StrategyConfig) -> list[int]:
        """Next steps to sample from each frontier node of `pool` this round."""
        return [pool.expand] * len(pool.frontier)

    def enough(self, completed: int, options: StepOptionsT, config: StrategyConfig) -> bool:
        """Whether a problem has enough complete solutions to stop early."""
        return False

    def candidates(self, search: ProblemSearch, config: StrategyConfig) -> list[Node]:
        """The complete solutions that compete for the answer: by default every one found."""
        return list(search.state["completed"])

    def final_selection(self, options: StepOptionsT) -> Selection:
        return getattr(options, "final_selection", "max-score")

    def solve(self, batch: Batch) -> None:
        config = batch.config
        self.validate(config)
        if config.scorer is None:
            raise ConfigError(f"{self.name} needs strategy.scorer (e.g. judge, reward-model)")
        require_blind(config.scorer, config, f"the {self.name} scorer")
        options = self.options(config)
        engine = StepEngine(batch.generator, config, options)
        searches = start_searches(batch.problems, batch.generator, config, options.delimiter)
        picker = pick(self.final_selection(options))
        for search in searches:
            search.state["pools"] = self.initial_pools(search.tree.root, options, config)
            search.state["completed"] = []

        def finish(index: int) -> None:
            search = searches[index]
            candidates = [node_candidate(search, n) for n in self.candidates(search, config)]
            if not candidates:  # stopped by the budget before any solution was complete
                frontier = [n for p in search.state["pools"] for n in p.frontier]
                candidates = [node_candidate(search, n) for n in frontier]
            batch.finish(index, finalize(search, candidates, batch.verifier, picker))

        while True:
            for index, search in enumerate(searches):
                if not search.done and config.budget.exhausted(search.usage):
                    finish(index)
            active = [(i, s) for i, s in enumerate(searches) if not s.done]
            if not active:
                break
            expansions, owners = [], []
            for _, search in active:
                for pool in search.state["pools"]:
                    if pool.done:
                        continue
                    pool.children = []
                    counts = self.expansion_counts(pool, config)
                    for node, count in zip(pool.frontier, counts, strict=True):
                        expansions.append(
                            Expansion(
                                search,
                                node,
                                count,
                                to_end=engine.last_step(node),
                                purpose=f"expand/pool{pool.index}",
                            )
                        )
                        owners.append(pool)
            new_nodes: list[tuple[ProblemSearch, Node]] = []
            for expansion, pool, completions in zip(
                expansions, owners, engine.generate(expansions), strict=True
            ):
                for completion in completions:
                    child = engine.add_step(expansion, completion)
                    pool.children.append(child)
                    new_nodes.append((expansion.search, child))
            score_nodes(config.scorer, new_nodes)
            for index, search in active:
                pools: list[Pool] = search.state["pools"]
                completed: list[Node] = search.state["completed"]
                for pool in pools:
                    if pool.done:
                        continue
                    completed.extend(c for c in pool.children if c.terminal)
                    pool.frontier, pool.done = self.survivors(pool, options, search, config)
                    pool.expand = self.next_expand(options)
                if all(p.done for p in pools) or self.enough(len(completed), options, config):
                    finish(index)


class BeamOptions(StepOptions):
    #: M: beam search samples M next steps from each kept beam; DVTS grows N/M subtrees of
    #: width M (strategy.n = N, the number of beams)
    beam_width: int = Field(4, ge=1)
    final_selection: Selection = "max-score"


class BeamWidthSearch(FrontierSearch[BeamOptions]):
    """A search of N beams (strategy.n) in whole groups of M (beam_width), each frontier node
    expanded M ways after the first round: beam search and DVTS."""

    options_model = BeamOptions

    def validate(self, config: StrategyConfig) -> None:
        width = self.options(config).beam_width
        if config.n < width or config.n % width:
            raise ConfigError(
                f"{self.name}: strategy.n (the number of beams, {config.n}) must be a multiple "
                f"of strategy.options.beam_width ({width})"
            )
        check_temperature(self.name, config.sampling.temperature, config.n, "steps")

    def next_expand(self, options: BeamOptions) -> int:
        return options.beam_width


class BeamSearch(BeamWidthSearch):
    name: ClassVar[str] = "beam-search"

    def initial_pools(self, root: Node, options: BeamOptions, config: StrategyConfig) -> list[Pool]:
        return [Pool(0, [root], expand=config.n, keep=config.n // options.beam_width)]

    def survivors(
        self, pool: Pool, options: BeamOptions, search: ProblemSearch, config: StrategyConfig
    ) -> tuple[list[Node], bool]:
        alive = top_by_score([c for c in pool.children if not c.terminal], pool.keep)
        return alive, not alive

    def expansion_counts(self, pool: Pool, config: StrategyConfig) -> list[int]:
        """N samples every round, however many beams survived."""
        return spread(config.n, len(pool.frontier))

    def candidates(self, search: ProblemSearch, config: StrategyConfig) -> list[Node]:
        """The N best-scored completed solutions, earlier ones first among equals."""
        completed: list[Node] = search.state["completed"]
        ranked = sorted(range(len(completed)), key=lambda i: (-rank_score(completed[i]), i))
        return [completed[i] for i in ranked[: config.n]]


class DVTS(BeamWidthSearch):
    name: ClassVar[str] = "dvts"

    def initial_pools(self, root: Node, options: BeamOptions, config: StrategyConfig) -> list[Pool]:
        subtrees = config.n // options.beam_width
        return [Pool(i, [root], expand=options.beam_width, keep=1) for i in range(subtrees)]

    def survivors(
        self, pool: Pool, options: BeamOptions, search: ProblemSearch, config: StrategyConfig
    ) -> tuple[list[Node], bool]:
        best = top_by_score(pool.children, 1)
        if not best or best[0].terminal:  # the subtree's greedy path has reached an answer
            return [], True
        return best, False

    def candidates(self, search: ProblemSearch, config: StrategyConfig) -> list[Node]:
        """Each subtree's last round of children: its best step and that step's siblings,
        complete or not (search-and-learn copies the last round into M beams per subtree)."""
        return [child for pool in search.state["pools"] for child in pool.children]
