"""`reasoner eval` scaled out on a private Ray cluster on 127.0.0.1: two SmolLM2 engine
replicas (Ray actors, one core each) and the math verifier as Ray tasks give the same summary
and the same predictions as the single shared engine, with the same seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reasoner.config import EvalConfig, build_config
from reasoner.runner.evaluate import run_eval
from reasoner.runner.run_folder import RunFolder
from reasoner.scale import replicas, verifiers

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
LIMIT = 4
METRIC_KEYS = ("problems", "scored", "correct", "accuracy", "verifier_errors", "no_answer")


def _config(out: Path, data_dir: Path, *extra: str) -> EvalConfig:
    return build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            f"model.name={MODEL}",
            f"limit={LIMIT}",
            "sampling.max_tokens=128",
            f"out={out}",
            f"data_dir={data_dir}",
            "progress=false",
            "model.kv_cache_gb=1",
            "model.max_model_len=1024",
            "model.dtype=float32",
            *extra,
        ],
    )


def _by_problem(rows: list[dict[str, Any]]) -> dict[str, tuple[Any, str]]:
    return {r["problem"]["id"]: (r["prediction"], r["verdict"]["status"]) for r in rows}


def test_two_ray_replicas_equal_one_engine(
    tmp_path: Path, data_dir: Path, vllm_generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    single = run_eval(_config(tmp_path / "single", data_dir), generator=vllm_generator)

    pools: list[Any] = []
    checkers: list[Any] = []
    load_pool, wrap_verifier = replicas.load_ray_generator, verifiers.ray_verifier

    def spy_pool(*args: Any, **kwargs: Any) -> Any:
        pool, resolved = load_pool(*args, **kwargs)
        pools.append(pool)
        return pool, resolved

    def spy_verifier(*args: Any, **kwargs: Any) -> Any:
        checkers.append(wrap_verifier(*args, **kwargs))
        return checkers[-1]

    monkeypatch.setattr(replicas, "load_ray_generator", spy_pool)
    monkeypatch.setattr(verifiers, "ray_verifier", spy_verifier)
    out = tmp_path / "ray"
    scaled = run_eval(
        _config(
            out,
            data_dir,
            "ray.address=local",
            "ray.replicas=2",
            "ray.num_cpus=3",  # one per replica, one for verifier tasks
            "ray.verifier_chunk=1",
        )
    )

    assert scaled["complete"] and single["complete"]
    assert {k: scaled[k] for k in METRIC_KEYS} == {k: single[k] for k in METRIC_KEYS}
    rows = RunFolder(out).load_results()
    assert _by_problem(rows) == _by_problem(RunFolder(tmp_path / "single").load_results())
    # both replicas served problems, each replica bound to its own core
    (pool,) = pools
    assert pool.served == [LIMIT // 2, LIMIT // 2]
    assert sorted(r["cores"] for r in pool.replicas) == ["0", "1"]
    assert pool.actors == [], "the pool was shut down with the run"
    # every completion was checked by a Ray task
    (checker,) = checkers
    assert type(checker).__name__ == "RayVerifier" and checker.tasks == LIMIT
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["generator"].startswith("ray:2xvllm:")
