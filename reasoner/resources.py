"""Where the asset folders (prompts/, data/, eval/, configs/, verifiers/) live.

In a checkout they sit beside the package; in an installed wheel they are shipped inside it as
`reasoner/_assets/<name>` (see pyproject.toml), so both layouts resolve here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from reasoner.errors import ConfigError, unknown_choice

SpecT = TypeVar("SpecT", bound=BaseModel)

PACKAGE_DIR = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    shipped = PACKAGE_DIR / "_assets" / name
    if shipped.is_dir():
        return shipped
    return PACKAGE_DIR.parent / name


def data_root() -> Path | None:
    """The folder that holds the benchmark data: $REASONER_DATA_DIR, else a `shared/data`
    beside or inside the checkout (where the project's data lives in development)."""
    env = os.environ.get("REASONER_DATA_DIR")
    if env:
        return Path(env).expanduser()
    for candidate in (
        PACKAGE_DIR.parent.parent / "shared" / "data",
        PACKAGE_DIR.parent / "shared" / "data",
    ):
        if candidate.is_dir():
            return candidate
    return None


def asset_names(folder: str) -> list[str]:
    return sorted(p.stem for p in asset_dir(folder).glob("*.yaml"))


def load_asset_yaml(folder: str, name: str, model: type[SpecT], kind: str) -> SpecT:
    """`<folder>/<name>.yaml` validated as `model`; errors name the file or list the choices."""
    path = asset_dir(folder) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(unknown_choice(kind, name, asset_names(folder)))
    try:
        return model.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
