"""Stop a diverging run with a message that says what happened and what to change.

A zeroth-order run with too large a learning rate does not crash: the loss climbs, then turns
NaN, and every later step trains on garbage. Checking each step's loss costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reasoner.errors import ReasonerError
from reasoner.training.config import DivergenceSettings


class TrainingDiverged(ReasonerError):
    """The loss turned NaN/infinite or blew up; the last checkpoint is still good."""


class DivergenceGuard:
    def __init__(self, settings: DivergenceSettings, stage: str, hint: str) -> None:
        self.settings = settings
        self.stage = stage
        self.hint = hint
        self.history: list[float] = []

    def seed(self, values: Sequence[float]) -> None:
        """The losses of steps already trained (a resumed run keeps its baseline)."""
        self.history = [float(v) for v in values]

    def check(self, step: int, value: float, name: str = "loss", bounded: bool = False) -> None:
        """`bounded`: a value that cannot blow up (a reward in [0, 1]): only NaN is checked."""
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"{self.stage} step {step}: the {name} is {value}; training diverged and was "
                f"stopped. {self.hint}"
            )
        self.history.append(float(value))
        w = self.settings.window
        if bounded or len(self.history) < 2 * w:
            return
        start = sum(self.history[:w]) / w
        recent = sum(self.history[-w:]) / w
        if start > 0 and recent > self.settings.max_ratio * start:
            raise TrainingDiverged(
                f"{self.stage} step {step}: the mean {name} of the last {w} steps ({recent:.4g}) "
                f"is more than {self.settings.max_ratio:g}x that of the first {w} "
                f"({start:.4g}); training diverged and was stopped. {self.hint} (The check is "
                "divergence.max_ratio / divergence.window.)"
            )
