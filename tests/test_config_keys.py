"""`reasoner config`: every key of every command's config is listed with a description taken from
its source comment, so a field added without one fails here."""

from __future__ import annotations

import pytest

from reasoner.config_keys import config_models, describe, render, walk
from reasoner.errors import ConfigError


@pytest.mark.parametrize("kind", sorted(config_models()))
def test_every_key_has_a_description(kind: str) -> None:
    undocumented = [k.key for k in walk(config_models()[kind]) if not k.description]
    assert not undocumented, f"{kind}: document these fields: {undocumented}"


def test_a_section_lists_its_keys_with_defaults() -> None:
    found = describe("eval", ["sampling"])
    keys = [k.key for k in found]
    assert keys[0] == "sampling" and "sampling.temperature" in keys
    temperature = next(k for k in found if k.key == "sampling.temperature")
    assert temperature.default == "None" and "strategy" in (temperature.description or "")
    assert "sampling.top_p" in render(found)


def test_an_unknown_key_or_kind_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown eval config key 'samplin'.*sampling"):
        describe("eval", ["samplin"])
    with pytest.raises(ConfigError, match=r"unknown config kind 'evl'.*eval"):
        describe("evl", [])
