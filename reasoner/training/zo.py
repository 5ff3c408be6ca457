"""Zeroth-order SGD with SPSA gradient estimates: MeZO (Malladi et al., 2023).

Memory is what this buys: a step is two forward passes and no backward, and the random direction
z is never stored. Each parameter is perturbed in place by eps*z, where z is drawn from a
generator seeded with the step's seed, chunk by chunk; the same seed draws the same z again for
the -2eps move, the restoring +eps move and the update. Peak memory over inference is one chunk
of noise (`chunk` elements), not a copy of the weights.

    estimate:  theta += eps*z; L+ = f(theta); theta -= 2eps*z; L- = f(theta); theta += eps*z
               g = (L+ - L-) / (2 eps)          (a scalar: the directional derivative along z)
    update:    theta -= lr * g * z              (z regenerated from the seed)

n-SPSA averages n such estimates (n seeds) in one update. Weight decay, if any, is applied to
weights but not to biases or norms, as in MeZO.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

CHUNK = 1 << 20  # noise elements drawn at a time: 4 MiB in float32


@dataclass(frozen=True)
class SPSAEstimate:
    seed: int
    projected_grad: float
    loss_plus: float
    loss_minus: float

    @property
    def loss(self) -> float:
        """(L+ + L-)/2: the loss at theta to second order, a better log than L+ alone."""
        return (self.loss_plus + self.loss_minus) / 2

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss_plus) and math.isfinite(self.loss_minus)


def step_seed(seed: int, step: int, index: int = 0) -> int:
    """The seed of the `index`-th direction of `step`: a function of the step alone, so a
    resumed run draws the directions an uninterrupted run would have drawn."""
    digest = hashlib.sha256(f"mezo:{seed}:{step}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _decays(name: str) -> bool:
    lowered = name.lower()
    return not ("bias" in lowered or "norm" in lowered)


class MeZO:
    def __init__(
        self,
        named_params: Sequence[tuple[str, Any]],
        eps: float,
        weight_decay: float = 0.0,
        chunk: int = CHUNK,
    ) -> None:
        if not named_params:
            raise ValueError("MeZO needs at least one parameter to train")
        self.named_params = list(named_params)
        self.eps = eps
        self.weight_decay = weight_decay
        self.chunk = chunk
        for name, p in self.named_params:
            if not p.is_contiguous():
                raise ValueError(f"parameter {name} is not contiguous; it cannot be perturbed")
            if str(p.dtype) != "torch.float32":
                raise ValueError(
                    f"parameter {name} is {p.dtype}; MeZO needs float32 weights (in lower "
                    "precision the +eps/-2eps/+eps moves do not restore them)"
                )

    @property
    def numel(self) -> int:
        return sum(p.numel() for _, p in self.named_params)

    def perturb(self, seed: int, scale: float) -> None:
        """theta += scale * z(seed), in place, chunk by chunk."""
        import torch

        generators: dict[Any, Any] = {}
        for _, p in self.named_params:
            gen = generators.get(p.device)
            if gen is None:
                gen = generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            flat = p.data.view(-1)
            for start in range(0, flat.numel(), self.chunk):
                piece = flat[start : start + self.chunk]
                z = torch.randn(piece.numel(), generator=gen, dtype=p.dtype, device=p.device)
                piece.add_(z, alpha=scale)
                del z

    def estimate(self, objective: Callable[[], float], seed: int) -> SPSAEstimate:
        """One SPSA estimate along z(seed); the parameters are restored afterwards."""
        self.perturb(seed, self.eps)
        plus = objective()
        self.perturb(seed, -2 * self.eps)
        minus = objective()
        self.perturb(seed, self.eps)
        return SPSAEstimate(seed, (plus - minus) / (2 * self.eps), plus, minus)

    def update(self, estimates: Sequence[SPSAEstimate], lr: float) -> None:
        """theta -= lr * mean_k(g_k * z_k), then decoupled weight decay."""
        for est in estimates:
            self.perturb(est.seed, -lr * est.projected_grad / len(estimates))
        if self.weight_decay:
            for name, p in self.named_params:
                if _decays(name):
                    p.data.mul_(1 - lr * self.weight_decay)

    def params_finite(self) -> bool:
        import torch

        return all(bool(torch.isfinite(p.data).all()) for _, p in self.named_params)
