"""Turn a model name (alias, local folder, GGUF file or hub id) into a folder a backend loads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reasoner.errors import ModelError
from reasoner.models.embedded import (
    EMBEDDED_MODELS,
    cache_dir,
    convert_gguf_to_hf,
    materialize,
    sha256_file,
)


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for
    path: str  # a local HF folder
    source: str  # "embedded", "local", "gguf" or "hub"
    sha256: str | None = None  # of the weights file the folder was made from, when known


def resolve_model(name: str) -> ResolvedModel:
    if name in EMBEDDED_MODELS:
        model = EMBEDDED_MODELS[name]
        return ResolvedModel(name, str(materialize(name)), "embedded", model.sha256)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        digest = sha256_file(path)
        folder = convert_gguf_to_hf(path, cache_dir() / "gguf" / digest[:16], digest)
        return ResolvedModel(name, str(folder), "gguf", digest)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json: not a transformers model")
        return ResolvedModel(name, str(path.resolve()), "local")
    if path.suffix == ".gguf" or name.startswith((".", "/", "~")):
        raise ModelError(f"model path {name!r} does not exist")
    return ResolvedModel(name, _download_from_hub(name), "hub")


def _download_from_hub(repo_id: str) -> str:
    aliases = ", ".join(sorted(EMBEDDED_MODELS))
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        raise ModelError(f"unknown model {repo_id!r}; embedded aliases: {aliases}") from None
    try:
        return snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
        )
    except Exception as exc:  # hub errors come in many types; all mean the same to the user
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelError(
            f"model {repo_id!r} is not an embedded alias ({aliases}), not a local folder or "
            f".gguf file, and could not be fetched from the Hugging Face hub{offline}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
