"""The built wheel carries code and assets only, and works when installed away from the checkout.

Committed run results live in the top-level `results/` folder, which is not packaged: a wheel that
grew them back (they were once 37 `results.jsonl` files, 2 MB) fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_WHEEL_BYTES = 1_000_000


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("reasoner-*.whl")
    return built


def test_wheel_holds_code_and_assets_only(wheel: Path) -> None:
    assert wheel.stat().st_size <= MAX_WHEEL_BYTES
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith(("results.jsonl", ".png", "summary.json"))]
    assert not [n for n in names if "/results/" in n]
    for asset in ("prompts", "data", "eval", "configs", "verifiers"):
        assert any(n.startswith(f"reasoner/_assets/{asset}/") for n in names), asset


def test_installed_wheel_lists_benchmarks_and_passes_selftest(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # Run from an unrelated folder with the installed copy first on the path, so nothing of the
    # checkout (its asset folders included) can be what answers.
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import reasoner; print(reasoner.__file__)"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(target))
    listed = subprocess.run(
        [sys.executable, "-m", "reasoner.cli", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert "gsm8k" in listed.stdout and "folio" in listed.stdout
    selftest = subprocess.run(
        [sys.executable, "-m", "reasoner.cli", "verify", "--selftest"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr
