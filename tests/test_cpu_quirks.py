"""The vLLM-on-CPU quirks the backend handles without the user's help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reasoner.models.config import ModelConfig
from reasoner.models.vllm_engine import configure_cpu_environment

CHILD = """
import importlib.util, multiprocessing as mp
from reasoner.models.vllm_engine import hide_broken_torchvision

def probe():
    return importlib.util.find_spec("torchvision") is None

if __name__ == "__main__":
    hide_broken_torchvision()
    with mp.get_context("spawn").Pool(1) as pool:
        print("parent-hidden", probe(), "child-hidden", pool.apply(probe))
"""


def test_broken_torchvision_is_hidden_here_and_in_spawned_engine_processes(tmp_path: Path) -> None:
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(repo)]),
        "REASONER_CACHE_DIR": str(tmp_path / "cache"),
    }
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "parent-hidden True child-hidden True" in out.stdout


def test_cpu_environment_binds_all_cores_and_sizes_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "VLLM_CPU_OMP_THREADS_BIND",
        "VLLM_CPU_NUM_OF_RESERVED_CPU",
        "VLLM_CPU_KVCACHE_SPACE",
    ):
        monkeypatch.delenv(name, raising=False)
    configure_cpu_environment(ModelConfig(kv_cache_gb=3))
    cores = sorted(os.sched_getaffinity(0))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == f"{cores[0]}-{cores[-1]}"
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")  # a user's own setting wins
    configure_cpu_environment(ModelConfig(kv_cache_gb=3))
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "8"
