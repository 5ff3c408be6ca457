"""Prompt templates as files: `prompts/<name>/{system,user}.jinja`, rendered to a chat."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from reasoner.errors import ConfigError, unknown_choice
from reasoner.resources import asset_dir
from reasoner.types import ChatMessage, Problem


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str | None
    user: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.system or ''}\0{self.user}".encode()).hexdigest()

    def render(self, problem: Problem, **extra: object) -> tuple[ChatMessage, ...]:
        """`extra` fills the template's other slots (a judge's candidate answer, say)."""
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        values = {"question": problem.question, "problem": problem, **problem.metadata, **extra}
        messages = []
        if self.system:
            messages.append(
                ChatMessage("system", env.from_string(self.system).render(values).strip())
            )
        messages.append(ChatMessage("user", env.from_string(self.user).render(values).strip()))
        return tuple(messages)


def available_prompts() -> list[str]:
    root = asset_dir("prompts")
    return sorted(p.name for p in root.iterdir() if (p / "user.jinja").is_file())


def load_prompt(name_or_path: str) -> PromptTemplate:
    """A prompt by name (prompts/<name>/) or by the path of a folder holding user.jinja."""
    folder = Path(name_or_path)
    if not (folder / "user.jinja").is_file():
        folder = asset_dir("prompts") / name_or_path
    if not (folder / "user.jinja").is_file():
        raise ConfigError(unknown_choice("prompt", name_or_path, available_prompts()))
    system = folder / "system.jinja"
    return PromptTemplate(
        name=name_or_path,
        system=system.read_text() if system.is_file() else None,
        user=(folder / "user.jinja").read_text(),
    )
