"""MeZO (zeroth-order SGD with the seed trick), its schedule and the divergence guard."""

from __future__ import annotations

import math

import pytest
import torch

from reasoner.training.config import DivergenceSettings, ZOConfig
from reasoner.training.divergence import DivergenceGuard, TrainingDiverged
from reasoner.training.tokens import batch_indices
from reasoner.training.zo import MeZO, step_seed
from reasoner.training.zo_stage import learning_rate


def _params(*shapes: tuple[int, ...]) -> list[tuple[str, torch.nn.Parameter]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (
            f"layer{i}.weight",
            torch.nn.Parameter(torch.randn(*s, generator=gen), requires_grad=False),
        )
        for i, s in enumerate(shapes)
    ]


def _direction(
    named: list[tuple[str, torch.nn.Parameter]], seed: int, chunk: int
) -> list[torch.Tensor]:
    """z(seed) as MeZO draws it: perturb zeros of the same shapes by 1."""
    zeros = [(n, torch.nn.Parameter(torch.zeros_like(p), requires_grad=False)) for n, p in named]
    MeZO(zeros, eps=1.0, chunk=chunk).perturb(seed, 1.0)
    return [p.data for _, p in zeros]


def test_estimate_restores_the_weights_and_is_the_directional_derivative() -> None:
    named = _params((7, 5), (13,))
    target = [torch.full_like(p, 0.5) for _, p in named]
    before = [p.data.clone() for _, p in named]
    calls: list[float] = []

    def loss() -> float:  # 0.5 |theta - target|^2: SPSA is exact on a quadratic
        value = 0.5 * sum(
            float(((p - t) ** 2).sum()) for (_, p), t in zip(named, target, strict=True)
        )
        calls.append(value)
        return value

    mezo = MeZO(named, eps=1e-3, chunk=16)  # several chunks per parameter
    est = mezo.estimate(loss, seed=42)
    assert len(calls) == 2 and calls[0] != calls[1]
    for (_, p), b in zip(named, before, strict=True):
        torch.testing.assert_close(p.data, b, rtol=0, atol=1e-6)
    z = _direction(named, 42, chunk=16)
    expected = sum(float(((b - t) * zi).sum()) for b, t, zi in zip(before, target, z, strict=True))
    assert est.projected_grad == pytest.approx(expected, rel=1e-3)
    assert est.loss == pytest.approx(loss(), rel=1e-4)


def test_update_regenerates_z_from_the_seed() -> None:
    named = _params((6, 4))
    before = named[0][1].data.clone()
    mezo = MeZO(named, eps=1e-3)
    est = mezo.estimate(lambda: float(named[0][1].sum()), seed=7)
    mezo.update([est], lr=0.1)
    z = _direction(named, 7, chunk=mezo.chunk)[0]
    torch.testing.assert_close(
        named[0][1].data, before - 0.1 * est.projected_grad * z, atol=1e-5, rtol=0
    )


def test_n_spsa_averages_the_estimates() -> None:
    one, two = _params((10,)), _params((10,))
    seeds = [3, 4]
    estimates = []
    for s in seeds:
        estimates.append(MeZO(one, eps=1e-3).estimate(lambda: float((one[0][1] ** 2).sum()), s))
    MeZO(one, eps=1e-3).update(estimates, lr=0.2)
    expected = two[0][1].data.clone()
    for est in estimates:
        expected -= 0.2 * est.projected_grad / 2 * _direction(two, est.seed, chunk=1 << 20)[0]
    torch.testing.assert_close(one[0][1].data, expected, atol=1e-5, rtol=0)


def test_zo_sgd_descends_a_quadratic() -> None:
    named = _params((20,), (30,))
    mezo = MeZO(named, eps=1e-3)

    def loss() -> float:
        return 0.5 * sum(float((p**2).sum()) for _, p in named)

    start = loss()
    for step in range(1, 301):
        mezo.update([mezo.estimate(loss, step_seed(0, step))], lr=0.01)
    assert loss() < 0.5 * start


def test_weight_decay_spares_biases_and_norms() -> None:
    named = [
        ("mlp.weight", torch.nn.Parameter(torch.ones(3), requires_grad=False)),
        ("mlp.bias", torch.nn.Parameter(torch.ones(3), requires_grad=False)),
        ("input_layernorm.weight", torch.nn.Parameter(torch.ones(3), requires_grad=False)),
    ]
    MeZO(named, eps=1e-3, weight_decay=0.5).update([], lr=0.1)
    assert [float(p[0]) for _, p in named] == pytest.approx([0.95, 1.0, 1.0])


def test_step_seeds_and_batches_depend_on_the_step_alone() -> None:
    assert step_seed(0, 5) == step_seed(0, 5) != step_seed(0, 6) != step_seed(1, 6)
    assert step_seed(0, 5, 0) != step_seed(0, 5, 1)
    order = [i for step in range(1, 6) for i in batch_indices(10, 2, step, seed=3)]
    assert sorted(order) == list(range(10))  # one epoch: every record once
    assert batch_indices(10, 4, 3, seed=3) == batch_indices(10, 4, 3, seed=3)
    assert order != [i for step in range(1, 6) for i in batch_indices(10, 2, step, seed=4)]


def test_learning_rate_defaults_and_schedules() -> None:
    base = {"data": {"dataset": "gsm8k"}}
    lora = ZOConfig.model_validate(base)
    full = ZOConfig.model_validate({**base, "zo": {"params": "all"}})
    assert (lora.learning_rate, lora.eps) == (1e-4, 1e-2)
    assert (full.learning_rate, full.eps) == (1e-6, 1e-3)
    assert learning_rate(lora, 7) == 1e-4  # constant by default
    linear = ZOConfig.model_validate(
        {
            **base,
            "train": {
                "learning_rate": 1.0,
                "max_steps": 10,
                "lr_scheduler": "linear",
                "warmup_ratio": 0.2,
            },
        }
    )
    assert [learning_rate(linear, s) for s in (1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 0.5, 0.0])


def test_divergence_guard_stops_on_nan_and_blow_up() -> None:
    guard = DivergenceGuard(DivergenceSettings(max_ratio=3.0, window=2), "zo", "Lower the lr.")
    with pytest.raises(TrainingDiverged, match=r"zo step 4: the loss is nan.*Lower the lr\."):
        guard.check(4, math.nan)
    guard = DivergenceGuard(DivergenceSettings(max_ratio=3.0, window=2), "zo", "Lower the lr.")
    for step, value in enumerate([1.0, 1.2, 1.1, 2.0, 2.5], start=1):
        guard.check(step, value)
    with pytest.raises(
        TrainingDiverged, match=r"step 6: the mean loss of the last 2 steps \(6\.5\)"
    ):
        guard.check(6, 10.5)
    rewards = DivergenceGuard(DivergenceSettings(max_ratio=3.0, window=1), "zo", "")
    for step, value in enumerate([0.01, 0.5, 0.9], start=1):
        rewards.check(step, value, "reward", bounded=True)  # a reward that grows is no blow-up
    with pytest.raises(TrainingDiverged, match="reward is inf"):
        rewards.check(4, math.inf, "reward", bounded=True)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_zo_config_refuses_low_precision_weights_by_field(dtype: str) -> None:
    from reasoner.config import build_config
    from reasoner.errors import ConfigError

    base = {"data": {"file": "records.jsonl"}, "model": {"dtype": dtype}}
    with pytest.raises(ConfigError, match=rf"model\.dtype: .*{dtype}.*float32"):
        build_config(ZOConfig, base, source="zo.yaml")
    assert build_config(ZOConfig, {**base, "model": {"dtype": "float32"}}).model.dtype == "float32"


def test_zo_config_takes_auto_as_float32() -> None:
    """`auto` (the machine-chosen dtype, where the config schema has it) is accepted for zo,
    whose stage then loads float32 whatever the machine would choose."""
    from typing import get_args

    from reasoner.training.config import DType

    if "auto" not in get_args(DType):
        pytest.skip("model.dtype: auto is not in this branch's schema")
    config = ZOConfig.model_validate({"data": {"file": "r.jsonl"}, "model": {"dtype": "auto"}})
    assert config.model.dtype == "auto"


def test_mezo_refuses_bf16_parameters() -> None:
    named = [("w", torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16), requires_grad=False))]
    with pytest.raises(ValueError, match=r"w is torch\.bfloat16.*float32"):
        MeZO(named, eps=1e-3)


def test_bf16_perturbation_would_not_restore_the_weights() -> None:
    """Why bf16 is refused: +eps/-2eps/+eps in bf16 leaves weights near 1 changed, while the
    same moves in float32 restore them (the check test_estimate_... makes to 1e-6)."""
    weights = torch.linspace(0.5, 2.0, 4096)
    z = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    low = weights.to(torch.bfloat16)
    for scale in (1e-3, -2e-3, 1e-3):
        low.add_(z.to(torch.bfloat16), alpha=scale)
    assert not torch.equal(low, weights.to(torch.bfloat16))
    high = weights.clone()
    for scale in (1e-3, -2e-3, 1e-3):
        high.add_(z, alpha=scale)
    torch.testing.assert_close(high, weights, rtol=0, atol=1e-6)
