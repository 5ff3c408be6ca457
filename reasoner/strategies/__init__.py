"""Inference-time strategies. A new one is a module plus an entry here."""

from __future__ import annotations

from reasoner.errors import ConfigError, unknown_choice
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

STRATEGIES: dict[str, type[Strategy]] = {
    Greedy.name: Greedy,
    SelfConsistency.name: SelfConsistency,
    BestOfN.name: BestOfN,
    SelfRefine.name: SelfRefine,
    ProgramAided.name: ProgramAided,
    BeamSearch.name: BeamSearch,
    DVTS.name: DVTS,
    TreeOfThought.name: TreeOfThought,
    MCTS.name: MCTS,
    FOLProver.name: FOLProver,
    Z3Program.name: Z3Program,
    LeanWholeProof.name: LeanWholeProof,
    LeanBestFirst.name: LeanBestFirst,
}

__all__ = ["STRATEGIES", "Budget", "Strategy", "StrategyConfig", "load_strategy", "problem_seed"]


def load_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(unknown_choice("strategy", name, STRATEGIES))
    return STRATEGIES[name]()
