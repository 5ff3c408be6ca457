"""Prompt templates as files: `prompts/<name>/{system,user}.jinja`, rendered to a chat, with
optional worked examples (`shots.yaml`: a list of {question, answer}) shown as earlier turns.

Few-shot examples go in as user/assistant turns rather than pasted into one message because chat
models are trained on turns, and the example questions pass through the same user template as the
real one, so the model sees one format."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from reasoner.errors import ConfigError, unknown_choice
from reasoner.resources import asset_dir
from reasoner.types import ChatMessage, Problem


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str | None
    user: str
    #: worked examples as (question, answer) pairs, rendered before the problem's own turn
    shots: tuple[tuple[str, str], ...] = ()

    @property
    def sha256(self) -> str:
        shots = "".join(f"\0{q}\0{a}" for q, a in self.shots)
        return hashlib.sha256(f"{self.system or ''}\0{self.user}{shots}".encode()).hexdigest()

    def render(self, problem: Problem, **extra: object) -> tuple[ChatMessage, ...]:
        """`extra` fills the template's other slots (a judge's candidate answer, say)."""
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        values = {"question": problem.question, "problem": problem, **problem.metadata, **extra}
        messages = []
        if self.system:
            messages.append(
                ChatMessage("system", env.from_string(self.system).render(values).strip())
            )
        user = env.from_string(self.user)
        for question, answer in self.shots:
            shot_values = {**values, "question": question}
            messages.append(ChatMessage("user", user.render(shot_values).strip()))
            messages.append(ChatMessage("assistant", answer.strip()))
        messages.append(ChatMessage("user", user.render(values).strip()))
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
        shots=_load_shots(folder / "shots.yaml"),
    )


def _load_shots(path: Path) -> tuple[tuple[str, str], ...]:
    if not path.is_file():
        return ()
    try:
        entries = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a list of {{question, answer}} entries")
    shots = []
    for number, entry in enumerate(entries, start=1):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("question"), str)
            and isinstance(entry.get("answer"), str)
        ):
            raise ConfigError(f"{path}: entry {number} needs a string `question` and `answer`")
        shots.append((entry["question"], entry["answer"]))
    return tuple(shots)
