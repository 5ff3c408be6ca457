"""The leanprover-community/repl wire format, as pure functions.

Kept apart from the process handling so it can be tested against recorded transcripts without
Lean. The format (from the REPL's README and `REPL/JSON.lean`): a command is one JSON object
`{"cmd": text, "env": n}` followed by a blank line; `env` is omitted to start a fresh
environment, the only place `import` is allowed. A response is one JSON object, which the REPL
pretty-prints over several lines, followed by a blank line. It carries `env` (the environment
the command produced), and `messages` and `sorries` only when there are some. A command the
REPL cannot run at all (bad JSON, unknown env) is answered with `{"message": "..."}` instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# `#print axioms` answers with one info message in one of these two forms.
_DEPENDS = re.compile(r"'(?P<name>[^']+)' depends on axioms: \[(?P<axioms>[^\]]*)\]", re.DOTALL)
_NO_AXIOMS = re.compile(r"'(?P<name>[^']+)' does not depend on any axioms")


class ProtocolError(Exception):
    """The REPL said something that is not a response; the process cannot be trusted after."""


@dataclass(frozen=True)
class LeanMessage:
    severity: str
    line: int
    column: int
    data: str
    end_line: int | None = None
    end_column: int | None = None

    def describe(self, line_offset: int = 0) -> str:
        """`line:col: severity: text`, the form Lean's own command line prints, which models
        have seen in training; `line_offset` maps the line back to the text the model wrote."""
        return f"{self.line - line_offset}:{self.column}: {self.severity}: {self.data}"


@dataclass(frozen=True)
class ReplResponse:
    env: int | None
    messages: tuple[LeanMessage, ...] = ()
    sorries: tuple[dict[str, Any], ...] = ()
    repl_error: str | None = None  # the REPL refused the command itself
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def errors(self) -> tuple[LeanMessage, ...]:
        return tuple(m for m in self.messages if m.severity == "error")


def encode_command(cmd: str, env: int | None = None) -> bytes:
    """json.dumps escapes newlines, so the only blank line is the terminator."""
    payload: dict[str, Any] = {"cmd": cmd}
    if env is not None:
        payload["env"] = env
    return (json.dumps(payload, ensure_ascii=False) + "\n\n").encode("utf-8")


class ResponseFramer:
    """Collects output lines into responses: a response ends at the first blank line after
    some text. Stray blank lines between responses are skipped."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def push(self, line: str) -> str | None:
        """Feed one line (with or without its newline); returns a complete response's text."""
        if line.strip():
            self._lines.append(line.rstrip("\n"))
            return None
        if not self._lines:
            return None
        text = "\n".join(self._lines)
        self._lines = []
        return text

    @property
    def pending(self) -> str:
        return "\n".join(self._lines)


def _pos(obj: Any, key: str) -> tuple[int | None, int | None]:
    pos = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(pos, dict):
        return None, None
    return pos.get("line"), pos.get("column")


def parse_message(obj: dict[str, Any]) -> LeanMessage:
    line, column = _pos(obj, "pos")
    end_line, end_column = _pos(obj, "endPos")
    return LeanMessage(
        severity=str(obj.get("severity", "error")),
        line=line or 0,
        column=column or 0,
        data=str(obj.get("data", "")),
        end_line=end_line,
        end_column=end_column,
    )


def parse_response(text: str) -> ReplResponse:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"REPL output is not JSON ({exc}): {text[:500]!r}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"REPL output is not a JSON object: {text[:500]!r}")
    if "env" not in obj and "message" in obj:
        return ReplResponse(env=None, repl_error=str(obj["message"]), raw=obj)
    env = obj.get("env")
    return ReplResponse(
        env=env if isinstance(env, int) else None,
        messages=tuple(parse_message(m) for m in obj.get("messages") or () if isinstance(m, dict)),
        sorries=tuple(s for s in obj.get("sorries") or () if isinstance(s, dict)),
        raw=obj,
    )


def parse_axioms(response: ReplResponse, name: str) -> list[str] | None:
    """The axioms `#print axioms name` reported, or None when no message says (the name was
    not declared, say). Names are matched loosely: Lean prints them fully qualified."""
    for message in response.messages:
        no_axioms = _NO_AXIOMS.search(message.data)
        if no_axioms and _same_name(no_axioms["name"], name):
            return []
        depends = _DEPENDS.search(message.data)
        if depends and _same_name(depends["name"], name):
            return [a.strip() for a in depends["axioms"].split(",") if a.strip()]
    return None


def _same_name(printed: str, name: str) -> bool:
    printed = printed.strip("«»")
    return printed == name or printed.endswith("." + name)
