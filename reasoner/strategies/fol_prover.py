"""`fol-prover`: the model translates premises and statement into first-order logic, a prover
decides (LINC, Olausson et al. 2023; Logic-LM, Pan et al. 2023).

Each of K translations is parsed by `reasoner.verifiers.fol.syntax` and decided by the same
`decide` the `fol` verifier uses (E by default, Prover9 or z3): True if the premises prove the
statement, False if they prove its negation, Uncertain if neither. The answer is the majority
of the prover's labels, written in the benchmark's format: the label itself where the gold is a
label (FOLIO, `fol` verifier), the letter of the option that says it where the problem has
options (ProofWriter, ProntoQA, `choice` verifier). A translation that does not parse, that the
prover cannot decide in time, whose premises contradict each other, whose label is none of the
options (Uncertain on ProntoQA, whose statements are all decidable), or that translates
something else than the problem (a few-shot example copied back, or formulas sharing no symbol
with the problem's text) is sent back with the error text for repair; see `execute_vote` for
the loop and what is recorded.

The translation prompt is the strategy's own (`options.prompt`, default `prompts/fol_translate`),
not the benchmark's chain-of-thought prompt: it sees the premises one per line and the statement
alone, whichever benchmark they came from (`split_problem`).
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import Field

from reasoner.errors import ConfigError
from reasoner.prompts import load_prompt
from reasoner.strategies.execute_vote import ExecuteAndVote, ExecuteOptions, Outcome
from reasoner.types import ChatMessage, Problem
from reasoner.verifiers.fol.emit import symbols
from reasoner.verifiers.fol.provers import (
    Decision,
    Label,
    ProverName,
    ProverUnavailable,
    decide,
    eprover_path,
    prover9_path,
)
from reasoner.verifiers.fol.syntax import FOLSyntaxError, parse
from reasoner.verifiers.fol.verifier import (
    Formalisation,
    extract_formalisation,
    normalize_label,
)

# error kinds, grouped the way the comparison reports them
PARSE_ERRORS = frozenset({"no_formalisation", "parse_error"})
PROVER_ERRORS = frozenset({"timeout", "prover_error", "inconsistent_premises"})
# a label the benchmark has no option for, or a translation of something else than the problem
OTHER_ERRORS = frozenset({"no_option", "copied_example", "ungrounded"})

_OPTION = re.compile(r"^\s*\(?([A-Z])\)\s*(.*?)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_QUESTION = re.compile(r"\n\s*Question:\s*(.*?)\s*(?:\n\s*Options:.*)?\Z", re.S)

_NOT_THIS_PROBLEM = (
    "translate the premises and the statement of this problem (after 'Now translate this "
    "problem'), not the examples"
)
_NO_FORMALISATION = (
    "your reply has no 'Premises:' line followed by formulas and a 'Conclusion:' line with a "
    "formula, so there was nothing to parse"
)


class Options(ExecuteOptions):
    prover: ProverName = "e"
    #: seconds for each of the (at most three) prover calls of one decision
    prover_timeout_s: float = Field(5.0, gt=0)
    prompt: str = "fol_translate"
    refine_prompt: str = "fol_refine"


def split_problem(problem: Problem) -> tuple[list[str], str]:
    """(premises, statement) in natural language. FOLIO keeps both in its metadata; the
    Logic-LM sets render `context`, `Question: ... ? statement` and `Options:` into the
    question, so the context is split into sentences and the statement is what follows the
    question's last `?`."""
    metadata = problem.metadata
    premises, conclusion = metadata.get("premises"), metadata.get("conclusion")
    if isinstance(premises, list) and premises and isinstance(conclusion, str) and conclusion:
        return [str(p).strip() for p in premises], conclusion.strip()
    match = _QUESTION.search(problem.question)
    if match is None:
        return _sentences(problem.question), ""
    context = problem.question[: match.start()]
    question = match.group(1).strip()
    statement = question.rsplit("?", 1)[1].strip() if "?" in question else question
    return _sentences(context), statement or question


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def option_letters(problem: Problem) -> dict[str, str]:
    """Option text (lower case) -> letter, from `metadata["options"]` ("A) True", ...)."""
    letters: dict[str, str] = {}
    for option in problem.metadata.get("options") or []:
        match = _OPTION.match(str(option))
        if match:
            letters[match.group(2).strip().rstrip(".").lower()] = match.group(1)
    return letters


def label_answer(problem: Problem, label: Label) -> str | None:
    """The label in the benchmark's answer format: itself, or the letter of the option that
    names it (Unknown and Uncertain are one label); None if no option names it."""
    letters = option_letters(problem)
    if not letters:
        return label
    for text, letter in letters.items():
        if normalize_label(text) == label:
            return letter
    return None


def _parse_feedback(premises: Sequence[str], conclusion: str, message: str) -> str:
    """The parser's message plus the formula it failed on, since the model sees only its own
    reply and a premise number is easy to miscount."""
    named = [(f"premise {i}", p) for i, p in enumerate(premises, 1)]
    for where, formula in [*named, ("conclusion", conclusion)]:
        try:
            parse(formula)
        except FOLSyntaxError as exc:
            return f"{where} `{formula}` does not parse: {exc}"
    return f"your formalisation does not parse: {message}"


def _decision_feedback(decision: Decision, timeout_s: float) -> str:
    if decision.error == "inconsistent_premises":
        return (
            "your premises contradict each other, so they prove anything; a premise is "
            "mistranslated (check negations and either-or)"
        )
    if decision.error == "timeout":
        return (
            f"the prover found no proof of the conclusion or of its negation within "
            f"{timeout_s:g}s; write simpler formulas (fewer nested quantifiers)"
        )
    return f"the prover failed on your formulas: {decision.message}"


def _squashed(formalisation: Formalisation) -> tuple[str, ...]:
    return tuple(" ".join(f.split()) for f in (*formalisation.premises, formalisation.conclusion))


@lru_cache(maxsize=16)
def example_translations(prompt: str) -> frozenset[tuple[str, ...]]:
    """The few-shot translations written in a translation prompt (each after a `Translation:`
    line): a small model asked to repair its translation sometimes answers with an example's,
    which the prover then decides, and whose label would score by chance."""
    template = load_prompt(prompt)
    text = f"{template.system or ''}\n{template.user}"
    found = set()
    for chunk in text.split("Translation:")[1:]:
        formalisation = extract_formalisation(re.split(r"\n\s*Example\b", chunk)[0])
        if formalisation is not None:
            found.add(_squashed(formalisation))
    return frozenset(found)


def _normalised(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def grounded(problem: Problem, premises: Sequence[str], conclusion: str) -> bool:
    """Whether any predicate or constant of the translation (3+ characters) occurs in the
    problem's text, case, spaces and punctuation ignored. A translation that shares no symbol
    with its problem translates something else; on FOLIO's own annotations this never fails
    (199 parseable validation problems)."""
    text = _normalised(problem.question + " " + " ".join(split_problem(problem)[0]))
    names = {
        _normalised(name)
        for formula in [*premises, conclusion]
        for _, name, _ in symbols(parse(formula))
    }
    return any(name in text for name in names if len(name) >= 3)


class FOLProver(ExecuteAndVote[Options]):
    name: ClassVar[str] = "fol-prover"
    options_model = Options

    def check_ready(self, options: Options) -> None:
        try:
            if options.prover == "e":
                eprover_path()
            elif options.prover == "prover9":
                prover9_path()
            elif importlib.util.find_spec("z3") is None:
                raise ProverUnavailable("z3 not found: pip install z3-solver")
        except ProverUnavailable as exc:
            raise ConfigError(f"strategy.options.prover={options.prover}: {exc}") from None

    def first_messages(self, problem: Problem, options: Options) -> tuple[ChatMessage, ...]:
        premises, statement = split_problem(problem)
        prompt = load_prompt(options.prompt)
        return prompt.render(problem, premises_nl=premises, statement=statement)

    def execute(self, problem: Problem, text: str, options: Options) -> Outcome:
        formalisation = extract_formalisation(text)
        if formalisation is None:
            return Outcome(None, "no_formalisation", _NO_FORMALISATION)
        premises, conclusion = formalisation.premises, formalisation.conclusion
        formulas = {"premises_fol": premises, "conclusion_fol": conclusion}
        if _squashed(formalisation) in example_translations(options.prompt):
            message = f"that is an example's translation; {_NOT_THIS_PROBLEM}"
            return Outcome(None, "copied_example", message, False, formulas)
        try:
            decision = decide(premises, conclusion, options.prover, options.prover_timeout_s)
        except ProverUnavailable as exc:
            return Outcome(None, "prover_unavailable", str(exc), True, formulas)
        details = {**formulas, "decision": decision.to_dict()}
        if decision.label is None:
            if decision.error == "parse_error":
                message = _parse_feedback(premises, conclusion, decision.message)
            else:
                message = _decision_feedback(decision, options.prover_timeout_s)
            return Outcome(None, decision.error, message, False, details)
        if not grounded(problem, premises, conclusion):
            message = f"none of your symbols is from this problem; {_NOT_THIS_PROBLEM}"
            return Outcome(None, "ungrounded", message, False, details)
        answer = label_answer(problem, decision.label)
        if answer is None:
            named = ", ".join(str(o) for o in problem.metadata.get("options") or [])
            message = (
                f"with your formulas the statement is {decision.label}, which is none of the "
                f"options ({named}); a premise is probably missing or mistranslated"
            )
            return Outcome(None, "no_option", message, False, details)
        return Outcome(answer, None, "", False, {**details, "label": decision.label})


def error_rates(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Parse and prover error rates of a fol-prover run, from its results rows (`tree`):
    over the first translations (round 0), over the chains' last translations (after repair),
    and the share of problems where no translation was decided at all."""
    first = [n for row in rows for n in row.get("tree", []) if n["round"] == 0]
    last: list[dict[str, Any]] = []
    for row in rows:
        latest: dict[int, dict[str, Any]] = {}
        for node in row.get("tree", []):
            latest[node["chain"]] = node
        last += latest.values()

    def rates(nodes: list[dict[str, Any]]) -> dict[str, Any]:
        kinds = Counter(n["error"] for n in nodes if n["error"])
        total = len(nodes)

        def share(group: frozenset[str]) -> float | None:
            return sum(kinds[k] for k in group) / total if total else None

        return {
            "translations": total,
            "parse_error_rate": share(PARSE_ERRORS),
            "prover_error_rate": share(PROVER_ERRORS),
            "other_error_rate": share(OTHER_ERRORS),
            "errors": dict(kinds),
        }

    undecided = sum(
        1 for row in rows if not any(n["answer"] is not None for n in row.get("tree", []))
    )
    return {
        "first_round": rates(first),
        "after_repair": rates(last),
        "problems": len(rows),
        "problems_undecided": undecided,
        "problems_undecided_rate": undecided / len(rows) if rows else None,
    }
