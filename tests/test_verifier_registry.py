"""Every registered verifier loads by name with the keyword the CLI and eval pass."""

from __future__ import annotations

import pytest

from reasoner.verifiers import VERIFIERS, load

NEEDS_A_MODEL = {"judge", "reward-model"}


@pytest.mark.parametrize("name", sorted(set(VERIFIERS) - NEEDS_A_MODEL))
def test_loads_with_a_timeout(name: str) -> None:
    with load(name, timeout_s=5.0) as verifier:
        assert verifier.name == name
