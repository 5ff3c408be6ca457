"""Tree-of-thought breadth-first search (Yao et al., 2023): at every depth, each of the b kept
partial solutions proposes k next steps, the scorer values every proposal, and the b best (or
b drawn in proportion to their values) are kept for the next depth.

Unlike beam search, b and k are free of each other and the search does not stop when enough
solutions are complete: it runs breadth-first to the depth limit or until no partial solution
is left, collecting every complete solution on the way.
"""

from __future__ import annotations

import random
from typing import ClassVar, Literal

from pydantic import Field

from reasoner.errors import ConfigError
from reasoner.strategies.base import StrategyConfig, problem_seed
from reasoner.strategies.beam_search import FrontierSearch, Pool, top_by_score
from reasoner.strategies.tree import (
    Node,
    ProblemSearch,
    Selection,
    StepOptions,
    check_temperature,
    rank_score,
)


class ToTOptions(StepOptions):
    #: b: partial solutions kept at each depth
    breadth: int = Field(3, ge=1)
    #: k: next steps proposed from each kept partial solution
    expand_k: int = Field(3, ge=1)
    #: keep the b best-valued proposals, or draw b in proportion to their values
    selection: Literal["greedy", "sample"] = "greedy"
    final_selection: Selection = "max-score"


def sample_by_score(nodes: list[Node], keep: int, rng: random.Random) -> list[Node]:
    """`keep` distinct nodes drawn without replacement with probability proportional to the
    score (Efraimidis-Spirakis keys); unscored nodes get a small weight, never zero, so they
    are drawn last rather than never when too few are scored."""
    keyed = []
    for index, node in enumerate(nodes):
        weight = max(rank_score(node), 0.0) + 1e-6
        keyed.append((rng.random() ** (1.0 / weight), -index, node))
    keyed.sort(reverse=True, key=lambda item: (item[0], item[1]))
    return [node for _, _, node in keyed[:keep]]


class TreeOfThought(FrontierSearch[ToTOptions]):
    name: ClassVar[str] = "tree-of-thought"
    options_model = ToTOptions

    def validate(self, config: StrategyConfig) -> None:
        options = self.options(config)
        if config.n != 1:
            raise ConfigError(
                f"{self.name} takes its width from strategy.options.breadth and expand_k; "
                f"strategy.n must be 1 (got {config.n})"
            )
        check_temperature(self.name, config.sampling.temperature, options.expand_k, "next steps")

    def initial_pools(self, root: Node, options: ToTOptions, config: StrategyConfig) -> list[Pool]:
        return [Pool(0, [root], expand=options.expand_k, keep=options.breadth)]

    def survivors(
        self, pool: Pool, options: ToTOptions, search: ProblemSearch, config: StrategyConfig
    ) -> tuple[list[Node], bool]:
        open_nodes = [c for c in pool.children if not c.terminal]
        if options.selection == "greedy":
            kept = top_by_score(open_nodes, pool.keep)
        else:
            depth = open_nodes[0].depth if open_nodes else 0
            rng = random.Random(problem_seed(config.seed, f"{search.problem.id}/select/{depth}"))
            distinct = top_by_score(open_nodes, len(open_nodes))  # drops repeated texts
            kept = sample_by_score(distinct, pool.keep, rng)
        return kept, not kept

    def next_expand(self, options: ToTOptions) -> int:
        return options.expand_k
