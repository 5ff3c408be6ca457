"""Emit parsed formulas for the provers: TPTP FOF (E), Prover9 input, z3 terms.

Names are sanitised once per problem by a Naming, so that premises and goal agree on every
symbol and no two FOLIO symbols ever meet under one prover name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from reasoner.verifiers.fol.syntax import (
    Atom,
    Binary,
    BinaryOp,
    Const,
    Equals,
    Formula,
    Func,
    Not,
    Term,
    Var,
)

SymbolKind = Literal["predicate", "function", "constant"]
# Words the emitted syntaxes reserve; a symbol spelled like one gets a suffix.
_RESERVED = frozenset({"all", "exists", "false", "true", "fof", "cnf", "end_of_list"})


def _ascii_identifier(name: str) -> str:
    text = name.replace("+", "_plus")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "s"
    return text


def _lower_first(text: str) -> str:
    if not text[0].isalpha():
        return "s_" + text
    return text[0].lower() + text[1:]


def _upper_first(text: str) -> str:
    if not text[0].isalpha():
        return "V_" + text
    return text[0].upper() + text[1:]


def symbols(formula: Formula) -> Iterator[tuple[SymbolKind, str, int]]:
    """Every (kind, name, arity) a formula uses; the same name at two arities is two symbols."""
    if isinstance(formula, Atom):
        yield "predicate", formula.predicate, len(formula.args)
        for arg in formula.args:
            yield from _term_symbols(arg)
    elif isinstance(formula, Equals):
        yield from _term_symbols(formula.left)
        yield from _term_symbols(formula.right)
    elif isinstance(formula, Not):
        yield from symbols(formula.body)
    elif isinstance(formula, Binary):
        yield from symbols(formula.left)
        yield from symbols(formula.right)
    else:
        yield from symbols(formula.body)


def _term_symbols(term: Term) -> Iterator[tuple[SymbolKind, str, int]]:
    if isinstance(term, Const):
        yield "constant", term.name, 0
    elif isinstance(term, Func):
        yield "function", term.name, len(term.args)
        for arg in term.args:
            yield from _term_symbols(arg)


class Naming:
    """One injective map from FOLIO symbols to prover-safe names, built over a whole problem.

    It must span the premises and the conclusion together: `Rock(x)` and a constant `rock`, or
    `Likes/1` and `Likes/2`, would otherwise meet as one symbol and change the problem.
    """

    def __init__(self, formulas: Iterable[Formula] = ()) -> None:
        self._names: dict[tuple[SymbolKind, str, int], str] = {}
        self._taken: set[str] = set(_RESERVED)
        for formula in formulas:
            self.add(formula)

    def add(self, formula: Formula) -> None:
        for kind, name, arity in symbols(formula):
            self.symbol(kind, name, arity)

    def _fresh(self, base: str) -> str:
        name, n = base, 1
        while name.lower() in self._taken:
            n += 1
            name = f"{base}_{n}"
        self._taken.add(name.lower())
        return name

    def symbol(self, kind: SymbolKind, name: str, arity: int) -> str:
        key = (kind, name, arity)
        if key not in self._names:
            self._names[key] = self._fresh(_lower_first(_ascii_identifier(name)))
        return self._names[key]


def variable_name(name: str) -> str:
    """Variables live in their own (upper-case) namespace in TPTP and Prover9."""
    return _upper_first(_ascii_identifier(name))


# --- emitters --------------------------------------------------------------------------------


def _bind(var: str, scope: dict[str, str]) -> dict[str, str]:
    """A fresh name per nesting, so `x` and `X`, or a shadowed `x`, never collapse into one."""
    base, used = variable_name(var), set(scope.values())
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}{n}"
    return {**scope, var: name}


def _tptp_term(term: Term, names: Naming, scope: dict[str, str]) -> str:
    if isinstance(term, Var):
        return scope[term.name]
    if isinstance(term, Const):
        return names.symbol("constant", term.name, 0)
    args = ",".join(_tptp_term(a, names, scope) for a in term.args)
    return f"{names.symbol('function', term.name, len(term.args))}({args})"


_TPTP_OPS: dict[BinaryOp, str] = {
    "and": "&",
    "or": "|",
    "xor": "<~>",
    "implies": "=>",
    "iff": "<=>",
}


def to_tptp(formula: Formula, names: Naming | None = None) -> str:
    """A TPTP FOF formula; pass the problem's Naming so premises and goal agree on symbols."""
    return _tptp(formula, names or Naming([formula]), {})


def _tptp(formula: Formula, names: Naming, scope: dict[str, str]) -> str:
    if isinstance(formula, Atom):
        pred = names.symbol("predicate", formula.predicate, len(formula.args))
        if not formula.args:
            return pred
        return f"{pred}({','.join(_tptp_term(a, names, scope) for a in formula.args)})"
    if isinstance(formula, Equals):
        sides = (_tptp_term(formula.left, names, scope), _tptp_term(formula.right, names, scope))
        return " = ".join(sides)
    if isinstance(formula, Not):
        return f"~ ({_tptp(formula.body, names, scope)})"
    if isinstance(formula, Binary):
        left, right = _tptp(formula.left, names, scope), _tptp(formula.right, names, scope)
        return f"({left} {_TPTP_OPS[formula.op]} {right})"
    inner = _bind(formula.var, scope)
    binder = "!" if formula.quantifier == "forall" else "?"
    return f"{binder}[{inner[formula.var]}]: ({_tptp(formula.body, names, inner)})"


_PROVER9_OPS: dict[BinaryOp, str] = {"and": "&", "or": "|", "implies": "->", "iff": "<->"}


def to_prover9(formula: Formula, names: Naming | None = None) -> str:
    """Prover9 syntax for `set(prolog_style_variables)`, which keeps TPTP's upper-case variables
    (by default Prover9 reads free names starting u..z - FOLIO's `y2003` - as variables)."""
    return _prover9(formula, names or Naming([formula]), {})


def _prover9(formula: Formula, names: Naming, scope: dict[str, str]) -> str:
    if isinstance(formula, Atom | Equals):
        return _tptp(formula, names, scope)  # terms and atoms are spelled the same
    if isinstance(formula, Not):
        return f"-({_prover9(formula.body, names, scope)})"
    if isinstance(formula, Binary):
        left, right = _prover9(formula.left, names, scope), _prover9(formula.right, names, scope)
        if formula.op == "xor":  # Prover9 has no xor
            return f"-({left} <-> {right})"
        return f"({left} {_PROVER9_OPS[formula.op]} {right})"
    inner = _bind(formula.var, scope)
    binder = "all" if formula.quantifier == "forall" else "exists"
    return f"({binder} {inner[formula.var]} ({_prover9(formula.body, names, inner)}))"


def to_z3(formula: Formula, names: Naming | None = None) -> Any:
    """A z3 BoolRef over one uninterpreted sort `Obj`; z3 is imported only when used."""
    import z3

    names = names or Naming([formula])
    obj = z3.DeclareSort("Obj")

    def term(t: Term, scope: dict[str, Any]) -> Any:
        if isinstance(t, Var):
            return scope[t.name]
        if isinstance(t, Const):
            return z3.Const(names.symbol("constant", t.name, 0), obj)
        fn = z3.Function(names.symbol("function", t.name, len(t.args)), *[obj] * len(t.args), obj)
        return fn(*(term(a, scope) for a in t.args))

    def build(f: Formula, scope: dict[str, Any]) -> Any:
        if isinstance(f, Atom):
            name = names.symbol("predicate", f.predicate, len(f.args))
            if not f.args:
                return z3.Bool(name)
            pred = z3.Function(name, *[obj] * len(f.args), z3.BoolSort())
            return pred(*(term(a, scope) for a in f.args))
        if isinstance(f, Equals):
            return term(f.left, scope) == term(f.right, scope)
        if isinstance(f, Not):
            return z3.Not(build(f.body, scope))
        if isinstance(f, Binary):
            left, right = build(f.left, scope), build(f.right, scope)
            return _Z3_OPS[f.op](z3, left, right)
        # z3 binds by position (de Bruijn), so shadowing needs no renaming here.
        var = z3.Const(variable_name(f.var), obj)
        body = build(f.body, {**scope, f.var: var})
        return z3.ForAll([var], body) if f.quantifier == "forall" else z3.Exists([var], body)

    return build(formula, {})


_Z3_OPS: dict[BinaryOp, Callable[[Any, Any, Any], Any]] = {
    "and": lambda z3, a, b: z3.And(a, b),
    "or": lambda z3, a, b: z3.Or(a, b),
    "xor": lambda z3, a, b: z3.Xor(a, b),
    "implies": lambda z3, a, b: z3.Implies(a, b),
    "iff": lambda z3, a, b: a == b,
}
