"""The Strategy contract: problems in, one Trace per problem out, every call recorded.

`on_trace` is called as each problem finishes (not when the whole batch does), which is what
lets the runner append it to disk at once and lose nothing to a crash.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from reasoner.models.base import Generator
from reasoner.prompts import PromptTemplate
from reasoner.types import Problem, SamplingParams, Trace
from reasoner.verifiers.base import Verifier

TraceCallback = Callable[[Trace], None]


@dataclass(frozen=True)
class StrategyConfig:
    prompt: PromptTemplate
    sampling: SamplingParams  # n and temperature are the strategy's to set
    n: int = 1
    seed: int = 0


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem sampling seed: stable across runs and independent of batch order, so a
    resumed run draws the samples the uninterrupted run would have drawn."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class Strategy(ABC):
    name: ClassVar[str]
    default_temperature: ClassVar[float]

    @abstractmethod
    def run(
        self,
        problems: Sequence[Problem],
        generator: Generator,
        verifier: Verifier,
        config: StrategyConfig,
        on_trace: TraceCallback | None = None,
    ) -> list[Trace]: ...
