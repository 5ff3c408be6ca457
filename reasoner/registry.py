"""A name -> class table for the parts a config picks by name (verifiers, strategies, trainers).

A plain read-only mapping whose lookup of an unknown name is a ConfigError listing the valid
names, so every registry fails the same way on a typo in a config, and `reasoner list`, error
messages and tests all read the names from one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar, overload

from reasoner.errors import ConfigError, unknown_choice

T = TypeVar("T")
D = TypeVar("D")


class Registry(Mapping[str, T], Generic[T]):
    """Entries by name. `registry[name]` raises ConfigError (a ValueError), not KeyError, for
    an unknown name; `name in registry` and `registry.get(name)` test without raising."""

    def __init__(self, kind: str, entries: Mapping[str, T]) -> None:
        """`kind` is what an entry is called in errors ("verifier", "strategy")."""
        self.kind = kind
        self._entries = dict(entries)

    @classmethod
    def by_name(cls, kind: str, classes: Iterable[T]) -> Registry[T]:
        """Each class under its own `name` attribute; two classes with one name are a bug in
        the table, refused at import rather than one silently shadowing the other."""
        entries: dict[str, T] = {}
        for entry in classes:
            name = str(getattr(entry, "name"))  # noqa: B009
            if name in entries:
                raise ValueError(f"two {kind} classes are named {name!r}")
            entries[name] = entry
        return cls(kind, entries)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(unknown_choice(self.kind, name, self._entries)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    @overload
    def get(self, name: str, /) -> T | None: ...
    @overload
    def get(self, name: str, /, default: T | D) -> T | D: ...
    def get(self, name: str, /, default: object = None) -> object:
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """The registered names, sorted (as errors and listings show them)."""
        return sorted(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
