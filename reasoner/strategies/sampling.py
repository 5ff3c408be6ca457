"""Sample n answers per problem in one engine call, verify each, and vote.

Greedy decoding is the n=1, temperature-0 case of self-consistency (Wang et al., 2023), so both
share this one rule; what differs is only the defaults.
"""

from __future__ import annotations

from typing import ClassVar

from reasoner.errors import ConfigError
from reasoner.strategies.base import StrategyConfig
from reasoner.strategies.n_sample import NoOptions, NSampleStrategy, Pick, Samples
from reasoner.strategies.voting import majority_cluster


def majority_pick(samples: Samples) -> Pick:
    """The first sample of the most common answer; with no answer among the samples, the first
    sample's verdict stands for the problem."""
    verdicts, clusters = samples.verdicts, samples.clusters
    winner = majority_cluster(clusters, len(clusters))
    chosen = verdicts[0] if winner is None else verdicts[clusters.index(winner)]
    return Pick(chosen, chosen.answer)


class SelfConsistency(NSampleStrategy[NoOptions]):
    name: ClassVar[str] = "self-consistency"
    default_temperature: ClassVar[float] = 0.7
    options_model = NoOptions

    def pick(self, samples: Samples, options: NoOptions) -> Pick:
        return majority_pick(samples)


class Greedy(SelfConsistency):
    """Chain-of-thought with greedy decoding: one sample at temperature 0."""

    name: ClassVar[str] = "greedy"
    default_temperature: ClassVar[float] = 0.0

    def check(self, config: StrategyConfig, options: NoOptions) -> None:
        if config.n != 1:
            raise ConfigError(
                f"the greedy strategy takes n=1 (got n={config.n}); use --strategy self-consistency"
            )
