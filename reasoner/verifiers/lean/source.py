"""How a completion becomes the Lean text that is checked.

The rules (also in LeanVerifier's docstring):

1. The code is the last ```lean / ```lean4 fenced block of the completion (an unclosed last
   fence runs to the end); with no such block, the whole completion after any `</think>`.
   `import` lines are dropped: imports come only from the problem's header, which is loaded
   once per REPL.
2. If the code declares the problem's theorem (`theorem NAME` or `lemma NAME`), it is checked
   as written, and the statement must appear in it unchanged up to whitespace; helper lemmas
   and `open` lines before it are allowed.
3. Otherwise the code is the proof, appended to the formal statement. A statement ending in
   `:= by` (miniF2F) takes tactics: a leading `by` in the code is dropped and unindented code is
   indented by two spaces. A statement ending in `:=` takes the code as is (a term, or `by ...`).
   A trailing `sorry` in the statement (the lean4_statements files) is removed first.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

_FENCE = re.compile(r"```(?:lean4?|Lean4?)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_THEOREM_NAME = re.compile(r"^\s*(?:theorem|lemma)\s+([^\s(:{\[⦃]+)", re.MULTILINE)
_TRAILING_SORRY = re.compile(r"\s*sorry\s*$")
_LEADING_BY = re.compile(r"^\s*by\b")
_IMPORT_LINE = re.compile(r"^\s*import\s.*$\n?", re.MULTILINE)

DEFAULT_HEADER = "import Mathlib\nimport Aesop\n\nopen BigOperators Real Nat Topology Rat\n"


class SourceError(ValueError):
    """The completion holds no usable proof, or changed the statement: an incorrect answer."""


@dataclass(frozen=True)
class LeanSource:
    code: str  # the theorem with its proof, what is sent after the header's preamble
    theorem_name: str
    mode: str  # "theorem" (rule 2) or "proof" (rule 3)


def split_header(header: str) -> tuple[str, str]:
    """(imports, preamble): imports make the cached env; the preamble (opens, set_option) is
    sent with every proof so it holds whatever the REPL keeps of an env's scopes."""
    imports = [line for line in header.splitlines() if line.strip().startswith("import ")]
    rest = [line for line in header.splitlines() if not line.strip().startswith("import ")]
    return "\n".join(imports), "\n".join(rest).strip()


def theorem_name(formal_statement: str) -> str:
    match = _THEOREM_NAME.search(formal_statement)
    if match is None:
        raise ValueError("the formal statement declares no `theorem` or `lemma`")
    return match.group(1)


def extract_code(completion: str) -> str:
    text = completion.rsplit("</think>", 1)[-1]
    blocks = _FENCE.findall(text)
    code = blocks[-1] if blocks else text
    return _IMPORT_LINE.sub("", code).strip("\n")


def _squash(text: str) -> str:
    return " ".join(text.split())


def _statement_head(formal_statement: str) -> str:
    """The statement without its proof opener (`:= by`, `:=`, a `sorry`)."""
    head = _TRAILING_SORRY.sub("", formal_statement.rstrip())
    head = re.sub(r"\bby\s*$", "", head.rstrip())
    return re.sub(r":=\s*$", "", head.rstrip()).rstrip()


def build_source(formal_statement: str, completion: str) -> LeanSource:
    name = theorem_name(formal_statement)
    code = extract_code(completion)
    if not code.strip():
        raise SourceError("no proof found in the completion")
    declared = {m.group(1) for m in _THEOREM_NAME.finditer(code)}
    if name in declared:
        if _squash(_statement_head(formal_statement)) not in _squash(code):
            raise SourceError(f"the statement of `{name}` was changed; prove it as given")
        return LeanSource(code.strip() + "\n", name, "theorem")
    statement = _TRAILING_SORRY.sub("", formal_statement.rstrip()).rstrip()
    if re.search(r"\bby$", statement):
        body = textwrap.dedent(_LEADING_BY.sub("", code, count=1).strip("\n"))
        if not body.strip():
            raise SourceError("no proof found in the completion")
        body = textwrap.indent(body, "  ")
    elif statement.endswith(":="):
        body = code.strip()
    else:
        raise ValueError("the formal statement must end with `:=` or `:= by`")
    return LeanSource(f"{statement}\n{body}\n", name, "proof")
