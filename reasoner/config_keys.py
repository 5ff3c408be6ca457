"""`reasoner config [KIND] [KEY ...]`: every key of a command's config with its type, default and
one-line description, as TRL's config dataclasses document each field.

The description is the field's own comment in the source (a `#:` line above it, a trailing
`# ...` on its line, or a `#` block right above it), or a `Field(description=...)`: one place to
write it, next to the field, so the listing cannot drift from the code. A field without one is
listed as undocumented, and tests/test_config_keys.py fails on it.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from reasoner.errors import ConfigError, unknown_choice

_FIELD_LINE = re.compile(r"^\s*(\w+)\s*:")
_TRAILING = re.compile(r"#(?!:)\s*(.+)$")
_MODULE_PATH = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])")


@dataclass(frozen=True)
class ConfigKey:
    key: str
    type: str
    default: str
    description: str | None


def config_models() -> dict[str, type[BaseModel]]:
    """The commands' config models by the name `reasoner config` takes."""
    from reasoner.config import EvalConfig
    from reasoner.loops.config import IterateConfig
    from reasoner.serving.cli import ServeConfig
    from reasoner.training.config import STAGE_CONFIGS

    models: dict[str, type[BaseModel]] = {"eval": EvalConfig, "iterate": IterateConfig}
    models.update({f"train-{stage}": model for stage, model in STAGE_CONFIGS.items()})
    models["serve"] = ServeConfig
    return models


def _source_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> its comment, from the class body (and its bases'): a `#:` block above the
    field, else a trailing comment on its (last) line, else a plain `#` block above it."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        plain: list[str] = []  # a `#` block directly above (used when nothing better is there)
        index = 1
        while index < len(lines):
            line = lines[index]
            stripped = line.strip()
            index += 1
            if stripped.startswith("#:"):
                above.append(stripped[2:].strip())
                continue
            if stripped.startswith("#"):
                plain.append(stripped[1:].strip())
                continue
            match = _FIELD_LINE.match(line)
            if match and line.startswith("    ") and not line.startswith("     "):
                last = line
                depth = _depth(line)
                while depth > 0 and index < len(lines):  # a field spread over several lines
                    last = lines[index]
                    depth += _depth(last)
                    index += 1
                trailing = _TRAILING.search(last.split("=", 1)[-1]) if "#" in last else None
                text = (
                    " ".join(above)
                    or (trailing.group(1).strip() if trailing else "")
                    or " ".join(plain)
                )
                if text:
                    comments[match.group(1)] = text
            above, plain = [], []
    return comments


def _depth(line: str) -> int:
    code = line.split("#", 1)[0]
    return sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [
            a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        return models[0] if len(models) == 1 else None
    return None


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if get_origin(annotation) is None else None
    return text or _MODULE_PATH.sub("", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined:
        return "(required)" if info.default_factory is None else "(computed)"
    if isinstance(info.default, BaseModel):
        return "(section)"
    return repr(info.default)


def walk(model: type[BaseModel], prefix: str = "") -> Iterator[ConfigKey]:
    """Every key of `model`, sections first-level then their keys, in declaration order."""
    comments = _source_comments(model)
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(info.annotation)
        description = info.description or comments.get(name)
        if nested is not None and description is None:
            own = inspect.cleandoc(nested.__dict__.get("__doc__") or "")
            description = own.split("\n\n")[0].replace("\n", " ") or None
        yield ConfigKey(key, _type_name(info.annotation), _default(info), description)
        if nested is not None:
            yield from walk(nested, f"{key}.")


def describe(kind: str, keys: list[str]) -> list[ConfigKey]:
    """The keys of `kind`'s config that equal or start with one of `keys` (all when empty)."""
    models = config_models()
    if kind not in models:
        raise ConfigError(unknown_choice("config kind", kind, models))
    found = [
        k
        for k in walk(models[kind])
        if not keys or any(k.key == q or k.key.startswith(f"{q}.") for q in keys)
    ]
    missing = [q for q in keys if not any(k.key == q or k.key.startswith(f"{q}.") for k in found)]
    if missing:
        raise ConfigError(
            unknown_choice(f"{kind} config key", missing[0], [k.key for k in walk(models[kind])])
        )
    return found


def render(found: list[ConfigKey]) -> str:
    width = max((len(k.key) for k in found), default=0)
    lines = []
    for k in found:
        lines.append(f"{k.key:<{width}}  {k.type} = {k.default}")
        lines.append(f"{'':<{width}}  {k.description or '(undocumented)'}")
    return "\n".join(lines)
