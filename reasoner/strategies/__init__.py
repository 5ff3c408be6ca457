"""Inference-time strategies. A new one is a module plus an entry here."""

from __future__ import annotations

from reasoner.registry import Registry
from reasoner.strategies.base import Budget, Strategy, StrategyConfig, problem_seed
from reasoner.strategies.beam_search import DVTS, BeamSearch
from reasoner.strategies.best_of_n import BestOfN
from reasoner.strategies.fol_prover import FOLProver
from reasoner.strategies.lean import LeanBestFirst, LeanWholeProof
from reasoner.strategies.mcts import MCTS
from reasoner.strategies.program_aided import ProgramAided
from reasoner.strategies.sampling import Greedy, SelfConsistency
from reasoner.strategies.self_refine import SelfRefine
from reasoner.strategies.tot import TreeOfThought
from reasoner.strategies.z3_program import Z3Program

STRATEGIES: Registry[type[Strategy]] = Registry.by_name(
    "strategy",
    (
        Greedy,
        SelfConsistency,
        BestOfN,
        SelfRefine,
        ProgramAided,
        BeamSearch,
        DVTS,
        TreeOfThought,
        MCTS,
        FOLProver,
        Z3Program,
        LeanWholeProof,
        LeanBestFirst,
    ),
)

__all__ = ["STRATEGIES", "Budget", "Strategy", "StrategyConfig", "load_strategy", "problem_seed"]


def load_strategy(name: str) -> Strategy:
    """A ConfigError listing the strategies for an unknown name."""
    return STRATEGIES[name]()
