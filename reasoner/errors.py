"""Errors a user can act on. Each names the file, field or choice that was wrong."""

from __future__ import annotations

from collections.abc import Iterable


class ReasonerError(Exception):
    """Base for errors the CLI prints without a traceback."""


class ConfigError(ReasonerError, ValueError):
    pass


class ModelError(ReasonerError):
    pass


class DatasetError(ReasonerError):
    pass


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> str:
    listed = ", ".join(sorted(choices))
    return f"unknown {kind} {name!r}; choose one of: {listed}"


class RunFolderError(ReasonerError, ValueError):
    """A run folder's file that cannot be read: names the file and, for results.jsonl, the line."""
