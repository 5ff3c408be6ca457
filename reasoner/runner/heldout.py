"""Held-out stays held out: problems are compared by their question text, hashed.

Problem ids are row positions or dataset-specific keys that repeat across splits and files (row
"5" of GSM8K train is not row "5" of GSM8K test), so nothing here compares ids. A question is
normalised before hashing so that formatting does not hide a copy:

- Unicode NFKC (full-width digits, ligatures and non-breaking spaces become plain ones);
- case folded (`casefold`, a stronger lower case);
- every punctuation or symbol character replaced by a space (so "3.5" stays distinct from
  "35", while "Hello, world!" matches "hello world"), except the math symbols and the minus
  sign, which are kept with spaces around them: "x+1=5" and "x-1=5" are different
  questions, "4+4" and "4 + 4" the same;
- whitespace runs collapsed to one space, and the ends trimmed.

The digest is the SHA-256 of the normalised text (UTF-8), in hex. Training run folders and the
adapter folders they produce keep the digests of their training questions in
`train_questions.sha256.txt` (one a line, sorted, no duplicates), so an eval of the adapter
can warn when the benchmark's questions were trained on without reading any training data.
"""

from __future__ import annotations

import hashlib
import unicodedata
import warnings
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from reasoner.errors import ConfigError
from reasoner.runs import write_text_atomic

#: the file, in a training run folder and in its adapter folder, of training question digests
TRAIN_QUESTIONS_FILE = "train_questions.sha256.txt"

_SEPARATORS = ("P", "S")  # Unicode punctuation and symbol categories
_KEPT = frozenset("-+*/^=<>%")  # they change what a question asks


class HeldoutOverlapWarning(UserWarning):
    """An adapter was trained on questions of the benchmark it is evaluated on."""


def normalize_question(text: str) -> str:
    """The question as compared: see the module docstring for the rules."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    spaced = "".join(
        f" {ch} "  # spaced, so "4+4" and "4 + 4" match
        if ch in _KEPT or unicodedata.category(ch) == "Sm"
        else " "
        if unicodedata.category(ch)[0] in _SEPARATORS
        else ch
        for ch in folded
    )
    return " ".join(spaced.split())


def question_hash(text: str) -> str:
    return hashlib.sha256(normalize_question(text).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Overlap:
    """Questions of one set found in another: how many, and a few to name in a message."""

    count: int
    total: int
    examples: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.count > 0


def question_hashes(questions: Iterable[str]) -> set[str]:
    return {question_hash(q) for q in questions}


def find_overlap(questions: Iterable[str], digests: Collection[str], examples: int = 3) -> Overlap:
    """Which of `questions` (texts) have their digest among `digests`; counted once per
    distinct question (several records of one problem are one question)."""
    seen: set[str] = set()
    hits: list[str] = []
    for question in questions:
        digest = question_hash(question)
        if digest in seen:
            continue
        seen.add(digest)
        if digest in digests:
            hits.append(question)
    return Overlap(len(hits), len(seen), tuple(_short(q) for q in hits[:examples]))


def require_disjoint(
    train: Iterable[str], heldout: Iterable[str], train_name: str, heldout_name: str
) -> None:
    """A ConfigError naming both sets and a few shared questions if any question of `train`
    is also in `heldout`."""
    overlap = find_overlap(train, question_hashes(heldout))
    if overlap:
        shown = "; ".join(repr(q) for q in overlap.examples)
        raise ConfigError(
            f"{overlap.count} of the {overlap.total} questions of {train_name} are also in "
            f"{heldout_name} (compared by normalised question text), e.g. {shown}. Training on "
            "held-out problems makes the held-out score meaningless: choose disjoint problems "
            "(another split, or a skip/limit that does not overlap)"
        )


def write_question_hashes(folder: str | Path, questions: Iterable[str]) -> Path:
    """`folder/train_questions.sha256.txt`: the sorted, distinct digests of `questions`."""
    path = Path(folder) / TRAIN_QUESTIONS_FILE
    digests = sorted(question_hashes(questions))
    write_text_atomic(path, "".join(d + "\n" for d in digests))
    return path


def read_question_hashes(folder: str | Path) -> set[str] | None:
    """The digests recorded in `folder`, or None when it has no record (an adapter trained
    elsewhere, or before this was recorded)."""
    path = Path(folder) / TRAIN_QUESTIONS_FILE
    if not path.is_file():
        return None
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def warn_if_trained_on(adapter: str | Path, questions: Iterable[str], benchmark: str) -> Overlap:
    """Warn (HeldoutOverlapWarning) when the adapter's recorded training questions include
    some of `questions`; the overlap found (empty when nothing is recorded)."""
    recorded = read_question_hashes(adapter)
    if recorded is None:
        return Overlap(0, 0, ())
    overlap = find_overlap(questions, recorded)
    if overlap:
        shown = "; ".join(repr(q) for q in overlap.examples)
        warnings.warn(
            f"adapter {adapter} was trained on {overlap.count} of the {overlap.total} questions "
            f"of {benchmark} (its {TRAIN_QUESTIONS_FILE}), e.g. {shown}: the score is not a "
            "held-out score",
            HeldoutOverlapWarning,
            stacklevel=2,
        )
    return overlap


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
