"""FOLIO-style first-order formulas: a typed AST, a recursive-descent parser, and a printer.

The notation is the one FOLIO's annotators (and LLMs prompted with it) write: `∀x (P(x) → Q(x))`,
`¬`, `∧`, `∨`, `⊕`, `→`, `↔`, predicates over constants such as `kO`, `y2003` or `dani_Shapiro`.
ASCII spellings models mix in are accepted too (`->`, `=>`, `<->`, `&`, `^`, `|`, `~`, `-`), as
are `=` / `≠` between terms and function terms.

Precedence, tightest first: `¬`, `∧`, `∨`, `⊕`, `→` (right-associative), `↔`; a quantifier's
scope reaches as far right as it can (`∀x P(x) → Q(x)` is `∀x (P(x) → Q(x))`), as in NLTK and
in the FOLIO formulas that omit the parentheses. A name is a variable where a quantifier binds
it, and any other name is a constant (`bonnie`, `y1984`) - except a free single letter `u`..`z`,
which is an error: it is a variable someone forgot to bind (FOLIO train has `∃x ∃x (… y …)`),
and guessing its quantifier would change the problem silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

# --- the AST ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Const:
    name: str


@dataclass(frozen=True)
class Func:
    name: str
    args: tuple[Term, ...]


Term = Var | Const | Func


@dataclass(frozen=True)
class Atom:
    """A predicate applied to terms; `args == ()` is a propositional atom."""

    predicate: str
    args: tuple[Term, ...] = ()


@dataclass(frozen=True)
class Equals:
    left: Term
    right: Term


@dataclass(frozen=True)
class Not:
    body: Formula


BinaryOp = Literal["and", "or", "xor", "implies", "iff"]


@dataclass(frozen=True)
class Binary:
    op: BinaryOp
    left: Formula
    right: Formula


Quantifier = Literal["forall", "exists"]


@dataclass(frozen=True)
class Quantified:
    quantifier: Quantifier
    var: str
    body: Formula


Formula = Atom | Equals | Not | Binary | Quantified

SYMBOLS: dict[str, str] = {
    "and": "∧",
    "or": "∨",
    "xor": "⊕",
    "implies": "→",
    "iff": "↔",
    "forall": "∀",
    "exists": "∃",
}


# --- tokens ----------------------------------------------------------------------------------

# Longest spellings first. ASCII spellings are accepted because models mix them in.
_OPERATORS: tuple[tuple[str, str], ...] = (
    ("<->", "iff"),
    ("<=>", "iff"),
    ("->", "implies"),
    ("=>", "implies"),
    ("!=", "neq"),
    ("↔", "iff"),
    ("⟷", "iff"),
    ("⇔", "iff"),
    ("→", "implies"),
    ("⟶", "implies"),
    ("⇒", "implies"),
    ("∧", "and"),
    ("&", "and"),
    ("^", "and"),
    ("∨", "or"),
    ("|", "or"),
    ("⊕", "xor"),
    ("¬", "not"),
    ("~", "not"),
    ("-", "not"),
    ("∀", "forall"),
    ("∃", "exists"),
    ("(", "("),
    (")", ")"),
    (",", ","),
    ("=", "eq"),
    ("≠", "neq"),
)
# Inside a name: FOLIO writes `Companies’Stocks`, `Anti-abortion`, `y42.3billion`, `c++`.
_NAME = re.compile(r"\w(?:[\w’']|[-.](?=\w)|\+)*", re.UNICODE)
_FREE_VARIABLE = re.compile(r"[u-z]")


@dataclass(frozen=True)
class Token:
    kind: str  # an operator kind from _OPERATORS, "name", or "end"
    text: str
    pos: int


class FOLSyntaxError(ValueError):
    """Says where: a refine loop shows this to the model, so it must point at the fix."""

    def __init__(self, message: str, source: str, pos: int) -> None:
        self.message = message
        self.source = source
        self.pos = pos
        self.column = pos + 1
        super().__init__(f"{message} at column {self.column}")


def _tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        ch = source[pos]
        if ch.isspace():
            pos += 1
            continue
        if ch == "." and not source[pos + 1 :].strip():
            break  # a full stop ends the formula: `… ∧ Giant(gpt-3)).`
        match = _NAME.match(source, pos)
        if match is not None:
            tokens.append(Token("name", match.group(), pos))
            pos = match.end()
            continue
        for spelling, kind in _OPERATORS:
            if source.startswith(spelling, pos):
                tokens.append(Token(kind, spelling, pos))
                pos += len(spelling)
                break
        else:
            raise FOLSyntaxError(f"unexpected character {ch!r}", source, pos)
    tokens.append(Token("end", "", len(source)))
    return tokens


# --- parser ----------------------------------------------------------------------------------

_BINARY_LEVELS: tuple[tuple[str, BinaryOp], ...] = (
    ("iff", "iff"),
    ("implies", "implies"),
    ("xor", "xor"),
    ("or", "or"),
    ("and", "and"),
)


@dataclass
class _Parser:
    source: str
    tokens: list[Token]
    index: int = 0
    bound: list[str] = field(default_factory=list)

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, expected: str) -> FOLSyntaxError:
        token = self.current
        found = "end of formula" if token.kind == "end" else repr(token.text)
        return FOLSyntaxError(f"unexpected {found}, expected {expected}", self.source, token.pos)

    def expect(self, kind: str, expected: str) -> Token:
        if self.current.kind != kind:
            raise self.fail(expected)
        return self.advance()

    def formula(self, level: int = 0) -> Formula:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        kind, op = _BINARY_LEVELS[level]
        left = self.formula(level + 1)
        if op == "implies":  # right-associative: A → B → C is A → (B → C)
            if self.current.kind == kind:
                self.advance()
                return Binary(op, left, self.formula(level))
            return left
        while self.current.kind == kind:
            self.advance()
            left = Binary(op, left, self.formula(level + 1))
        return left

    def unary(self) -> Formula:
        token = self.current
        if token.kind == "not":
            self.advance()
            return Not(self.unary())
        if token.kind in ("forall", "exists"):
            self.advance()
            var = self.expect("name", "a variable after the quantifier").text
            self.bound.append(var)
            try:
                # Maximal scope; `∀x ∀y (...)` nests through unary.
                body = self.formula()
            finally:
                self.bound.pop()
            quantifier: Quantifier = "forall" if token.kind == "forall" else "exists"
            return Quantified(quantifier, var, body)
        if token.kind == "(":
            self.advance()
            inner = self.formula()
            self.expect(")", "')' or an operator")
            return inner
        if token.kind == "name":
            return self.atom()
        raise self.fail("a formula")

    def atom(self) -> Formula:
        name = self.advance()
        args: tuple[Term, ...] = ()
        has_args = self.current.kind == "("
        if has_args:
            args = self.arguments()
        if self.current.kind in ("eq", "neq"):
            negate = self.advance().kind == "neq"
            left = Func(name.text, args) if has_args else self.name_term(name)
            equation = Equals(left, self.term())
            return Not(equation) if negate else equation
        return Atom(name.text, args)

    def arguments(self) -> tuple[Term, ...]:
        self.expect("(", "'('")
        if self.current.kind == ")":
            self.advance()
            return ()
        args = [self.term()]
        while self.current.kind == ",":
            self.advance()
            args.append(self.term())
        self.expect(")", "',' or ')'")
        return tuple(args)

    def term(self) -> Term:
        token = self.expect("name", "a term (a variable or constant)")
        if self.current.kind == "(":
            return Func(token.text, self.arguments())
        return self.name_term(token)

    def name_term(self, token: Token) -> Term:
        if token.text in self.bound:
            return Var(token.text)
        if _FREE_VARIABLE.fullmatch(token.text):
            name = token.text
            message = f"variable {name!r} is not bound by any quantifier (∀{name} or ∃{name})"
            raise FOLSyntaxError(message, self.source, token.pos)
        return Const(token.text)


def parse(source: str) -> Formula:
    """Raises FOLSyntaxError, whose message names the column and the offending text."""
    parser = _Parser(source, _tokenize(source))
    if parser.current.kind == "end":
        raise FOLSyntaxError("empty formula", source, 0)
    formula = parser.formula()
    if parser.current.kind == ")":
        raise parser.fail("an operator (more ')' than '(')")
    if parser.current.kind != "end":
        raise parser.fail("an operator or the end of the formula")
    return formula


# --- printing back in FOLIO notation ---------------------------------------------------------


def _term_str(term: Term) -> str:
    if isinstance(term, Func):
        return f"{term.name}({', '.join(_term_str(a) for a in term.args)})"
    return term.name


def to_folio(formula: Formula) -> str:
    """Fully parenthesised, so that `parse(to_folio(f)) == f` whatever the precedences."""
    if isinstance(formula, Atom):
        if not formula.args:
            return formula.predicate
        return f"{formula.predicate}({', '.join(_term_str(a) for a in formula.args)})"
    if isinstance(formula, Equals):
        return f"{_term_str(formula.left)} = {_term_str(formula.right)}"
    if isinstance(formula, Not):
        return f"¬{to_folio(formula.body)}"
    if isinstance(formula, Binary):
        return f"({to_folio(formula.left)} {SYMBOLS[formula.op]} {to_folio(formula.right)})"
    return f"{SYMBOLS[formula.quantifier]}{formula.var} ({to_folio(formula.body)})"
