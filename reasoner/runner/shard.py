"""Split one eval across machines (`--shard i/n`) and merge the shards into one run folder whose
summary equals that of the unsharded run."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reasoner.errors import ConfigError

T = TypeVar("T")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    match = _SHARD.match(text)
    if match is None:
        raise ConfigError(f"shard {text!r} is not of the form i/n (e.g. 0/4)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {text!r}: need 0 <= i < n")
    return index, count


def select_shard(items: Sequence[T], shard: str | None) -> list[T]:
    """Every n-th item from the i-th: strided rather than contiguous, so shards of a benchmark
    sorted by difficulty (MATH by level, say) take about the same time."""
    if shard is None:
        return list(items)
    index, count = parse_shard(shard)
    return list(items[index::count])


def merge_configs(folders: Sequence[Path]) -> dict[str, Any]:
    """The shards' common config with `shard` and `out` cleared; any other difference is an
    error, as is a missing or repeated shard."""
    configs = []
    for folder in folders:
        path = folder / "config.yaml"
        if not path.is_file():
            raise ConfigError(f"{folder} is not a run folder: {path.name} is missing")
        configs.append(yaml.safe_load(path.read_text()) or {})
    unsharded = [str(f) for f, c in zip(folders, configs, strict=True) if not c.get("shard")]
    if unsharded:
        raise ConfigError(f"not shards of a run (no shard in config.yaml): {', '.join(unsharded)}")
    shards: list[str] = [str(c["shard"]) for c in configs]
    parsed = [parse_shard(s) for s in shards]
    counts = {n for _, n in parsed}
    if len(counts) != 1:
        raise ConfigError(f"shards of different splits: {sorted(shards)}")
    (count,) = counts
    missing = sorted(set(range(count)) - {i for i, _ in parsed})
    if missing or len(parsed) != count:
        raise ConfigError(f"need each of shards 0..{count - 1} once; got {sorted(shards)}")
    common = [{k: v for k, v in c.items() if k not in ("shard", "out")} for c in configs]
    for folder, config in zip(folders[1:], common[1:], strict=True):
        if config != common[0]:
            changed = sorted(
                k for k in set(config) | set(common[0]) if config.get(k) != common[0].get(k)
            )
            raise ConfigError(f"{folder} was run with a different config ({', '.join(changed)})")
    return common[0]


def concatenate_jsonl(sources: Sequence[Path], target: Path) -> None:
    with open(target, "w", encoding="utf-8") as out:
        for source in sources:
            if source.is_file():
                for line in source.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        json.loads(line)  # a torn line would corrupt the merge
                        out.write(line + "\n")
