from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from reasoner.resources import data_root
from reasoner.types import Completion, Problem
from reasoner.verifiers.fol import decide, parse, to_prover9, to_tptp
from reasoner.verifiers.fol.emit import Naming
from reasoner.verifiers.fol.provers import (
    PROVERS,
    ProverName,
    ProverUnavailable,
    eprover_path,
    prove,
    prover9_path,
)
from reasoner.verifiers.fol.syntax import (
    Atom,
    Binary,
    Const,
    Equals,
    FOLSyntaxError,
    Func,
    Not,
    Quantified,
    Var,
    to_folio,
)
from reasoner.verifiers.fol.verifier import (
    FOLVerifier,
    extract_formalisation,
    extract_label,
    normalize_label,
)


def _available(prover: ProverName) -> bool:
    try:
        if prover == "e":
            eprover_path()
        elif prover == "prover9":
            prover9_path()
        else:
            import z3  # noqa: F401
    except (ProverUnavailable, ImportError):
        return False
    return True


@pytest.fixture(params=PROVERS)
def prover(request: pytest.FixtureRequest) -> ProverName:
    name: ProverName = request.param
    if not _available(name):
        pytest.skip(f"{name} is not installed (the `provers` extra)")
    return name


def P(name: str, *args: str) -> Atom:
    return Atom(name, tuple(Const(a) for a in args))


def Px(name: str, var: str = "x") -> Atom:
    return Atom(name, (Var(var),))


# --- parser ----------------------------------------------------------------------------------


def test_quantifier_scope_reaches_as_far_right_as_it_can() -> None:
    expected = Quantified("forall", "x", Binary("implies", Px("P"), Px("Q")))
    assert parse("∀x (P(x) → Q(x))") == expected
    assert parse("∀x P(x) → Q(x)") == expected
    assert parse("∀x ∃y (R(x, y))") == Quantified(
        "forall", "x", Quantified("exists", "y", Atom("R", (Var("x"), Var("y"))))
    )


def test_precedence_not_and_or_xor_implies_iff() -> None:
    a, b, c, d = P("A", "k"), P("B", "k"), P("C", "k"), P("D", "k")
    assert parse("A(k) ∧ B(k) ∨ C(k)") == Binary("or", Binary("and", a, b), c)
    assert parse("A(k) ⊕ B(k) → C(k) ⊕ D(k)") == Binary(
        "implies", Binary("xor", a, b), Binary("xor", c, d)
    )
    assert parse("A(k) → B(k) → C(k)") == Binary("implies", a, Binary("implies", b, c))
    assert parse("¬A(k) ∧ B(k)") == Binary("and", Not(a), b)
    assert parse("A(k) ∧ B(k) ↔ C(k)") == Binary("iff", Binary("and", a, b), c)


@pytest.mark.parametrize(
    ("variant", "canonical"),
    [
        ("∀x (P(x) -> Q(x))", "∀x (P(x) → Q(x))"),
        ("∀x (P(x) => Q(x))", "∀x (P(x) → Q(x))"),
        ("P(a) & Q(a) | ~R(a)", "P(a) ∧ Q(a) ∨ ¬R(a)"),
        ("P(a) ^ Q(a)", "P(a) ∧ Q(a)"),
        ("P(a) <-> Q(a)", "P(a) ↔ Q(a)"),
        ("P(a) ⟷ Q(a)", "P(a) ↔ Q(a)"),
        ("-P(a)", "¬P(a)"),
        ("BreastCancer (x0)", "BreastCancer(x0)"),
        ("(LanguageModel(bert) ∧ Giant(bert)).", "LanguageModel(bert) ∧ Giant(bert)"),
        ("  ∃x (P(x))  ", "∃x P(x)"),
    ],
)
def test_notation_variants(variant: str, canonical: str) -> None:
    assert parse(variant) == parse(canonical)


def test_folio_names_and_constants() -> None:
    assert parse("MatureCompanies’Stocks(kO)") == P("MatureCompanies’Stocks", "kO")
    assert parse("ValuedAt(yalesendowment, y42.3billion)") == P(
        "ValuedAt", "yalesendowment", "y42.3billion"
    )
    assert parse("Anti-abortion(tower-a)") == P("Anti-abortion", "tower-a")
    assert parse("WrittenIn(x1, c++) ∧ Grade(a+)") == Binary(
        "and", P("WrittenIn", "x1", "c++"), P("Grade", "a+")
    )
    # Years are constants; only a bound name is a variable.
    assert parse("StreamingService(y1984)") == P("StreamingService", "y1984")


def test_equality_functions_and_propositions() -> None:
    assert parse("a = b") == Equals(Const("a"), Const("b"))
    assert parse("f(a) ≠ b") == Not(Equals(Func("f", (Const("a"),)), Const("b")))
    assert parse("Rain → Wet") == Binary("implies", Atom("Rain"), Atom("Wet"))


def test_round_trip_on_folio_validation() -> None:
    root = data_root()
    path = root / "folio" / "folio-validation.jsonl" if root else None
    if path is None or not path.is_file():
        pytest.skip("FOLIO data not found")
    checked = 0
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for source in [*row["premises-FOL"], row["conclusion-FOL"]]:
            try:
                formula = parse(source)
            except FOLSyntaxError:
                continue
            assert parse(to_folio(formula)) == formula
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize(
    ("source", "column", "fragment"),
    [
        ("∀x (P(x) → → Q(x))", 12, "unexpected '→'"),
        ("P(a) ∧ Q(a))", 12, "more ')' than '('"),
        ("∀x ∀y (Movie(x), NamedAfter(x, y))", 16, "unexpected ','"),
        ("∀x (P(x) ∧ Q(y))", 14, "variable 'y' is not bound"),
        ("P(a) # Q(a)", 6, "unexpected character '#'"),
        ("∀x (P(x)", 9, "unexpected end of formula"),
        ("   ", 1, "empty formula"),
        ("ComeFrom(x1, dc universe)", 17, "unexpected 'universe'"),
    ],
)
def test_parse_errors_say_where(source: str, column: int, fragment: str) -> None:
    with pytest.raises(FOLSyntaxError) as info:
        parse(source)
    assert info.value.column == column
    assert fragment in str(info.value)
    assert f"column {column}" in str(info.value)


# --- emitters --------------------------------------------------------------------------------


def test_tptp_names_are_sanitised_and_kept_apart() -> None:
    premises = [parse("∀x (Rock(x) → Likes(x, rock))"), parse("Likes(kO) ∧ Companies’Stocks(kO)")]
    names = Naming(premises)
    assert to_tptp(premises[0], names) == "![X]: ((rock(X) => likes(X,rock_2)))"
    assert to_tptp(premises[1], names) == "(likes_2(kO) & companiesStocks(kO))"


def test_shadowed_variables_stay_distinct() -> None:
    formula = parse("∀x (P(x) → ∃x Q(x))")
    assert to_tptp(formula) == "![X]: ((p(X) => ?[X2]: (q(X2))))"


def test_prover9_spells_xor_and_uses_prolog_variables() -> None:
    assert to_prover9(parse("∀x (A(x) ⊕ B(x))")) == "(all X (-(a(X) <-> b(X))))"


# --- provers ---------------------------------------------------------------------------------

SYLLOGISM = ["∀x (Man(x) → Mortal(x))", "Man(socrates)"]


@pytest.mark.parametrize(
    ("conclusion", "label"),
    [("Mortal(socrates)", "True"), ("¬Mortal(socrates)", "False"), ("Man(plato)", "Uncertain")],
)
def test_decide_three_ways(prover: ProverName, conclusion: str, label: str) -> None:
    decision = decide(SYLLOGISM, conclusion, prover, timeout_s=10)
    assert (decision.label, decision.error) == (label, None)


def test_equality_xor_and_clashing_names(prover: ProverName) -> None:
    assert decide(["a = b", "P(a)"], "P(b)", prover).label == "True"
    assert decide(["P(a) ⊕ Q(a)", "P(a)"], "Q(a)", prover).label == "False"
    # `Rock` the predicate and `rock` the constant, `Likes/1` and `Likes/2`, stay apart.
    clash = ["Rock(rock)", "∀x (Rock(x) → Likes(x))", "Likes(a, b)"]
    assert decide(clash, "Likes(rock)", prover).label == "True"


def test_inconsistent_premises_are_an_error(prover: ProverName) -> None:
    decision = decide(["∀x (Bird(x) → Flies(x))", "Bird(tweety)", "¬Flies(tweety)"], "P(a)", prover)
    assert (decision.label, decision.error) == (None, "inconsistent_premises")


def test_parse_error_names_the_formula() -> None:
    decision = decide(["P(a)", "Q(a) ∧"], "P(a)")
    assert decision.error == "parse_error"
    assert decision.message.startswith("premise 2: unexpected end of formula")


# Transitive R with an endless supply of successors: a saturating prover never finishes.
ENDLESS = ["∀x ∀y (R(x, y) → R(y, f(x, y)))", "∀x ∀y ∀z (R(x, y) ∧ R(y, z) → R(x, z))", "R(a, b)"]


def _pigeonhole(holes: int) -> list[str]:
    """Hard for z3's CDCL (which finds ENDLESS's countermodel at once)."""
    pigeons = range(holes + 1)
    every = [" ∨ ".join(f"In(p{p}, h{h})" for h in range(holes)) for p in pigeons]
    alone = [
        f"¬(In(p{p}, h{h}) ∧ In(p{q}, h{h}))"
        for h in range(holes)
        for p in pigeons
        for q in pigeons
        if p < q
    ]
    return every + alone


def test_timeout_is_an_error_and_the_next_call_works(prover: ProverName) -> None:
    premises = _pigeonhole(9) if prover == "z3" else ENDLESS
    start = time.monotonic()
    decision = decide(premises, "R(b, a)", prover, timeout_s=0.5)
    assert (decision.label, decision.error) == (None, "timeout")
    assert time.monotonic() - start < 3 * 0.5 + 6  # three calls, each cut off
    assert decide(SYLLOGISM, "Mortal(socrates)", prover, timeout_s=10).label == "True"


def test_prove_from_a_thread() -> None:
    """The subprocess timeout needs no signals, so it works off the main thread."""
    if not _available("e"):
        pytest.skip("E is not installed")
    from concurrent.futures import ThreadPoolExecutor

    premises = [parse(f) for f in ENDLESS]
    with ThreadPoolExecutor(2) as pool:
        result = pool.submit(prove, premises, parse("R(b, a)"), "e", 0.3).result()
    assert result.status == "timeout"


# Real FOLIO validation examples whose gold FOL yields the gold label.
FOLIO_EXAMPLES = [
    (
        [
            "∀x (Nice(x) → ¬Mean(x))",
            "∃x (Grumpy(x) ∧ Mean(x))",
            "∀x (AnimalLover(x) → Nice(x))",
            "∀x (PetOwner(x) → AnimalLover(x))",
            "PetOwner(tom)",
        ],
        "¬(Grumpy(tom) ∧ Mean(tom))",
        "True",
    ),
    (
        ["∀x (Event(x) → Happy(x) ⊕ Sad(x))", "∃x (Event(x) ∧ Happy(x)) "],
        "∀x (Event(x) → Sad(x))",
        "False",
    ),
    (["∀x (Cat(x) → Mammal(x))", "∃x (Pet(x) ∧ ¬Mammal(x))"], "∀x (Pet(x) → ¬Cat(x))", "Uncertain"),
    (
        [
            "∀x (TalentShows(x) → Engaged(x))",
            "∀x (TalentShows(x) ∨ Inactive(x))",
            "∀x (Chaperone(x) → ¬Students(x))",
            "∀x (Inactive(x) → Chaperone(x))",
            "∀x (AcademicCareer(x) → Students(x))",
            "(Engaged(bonnie) ∧ Students(bonnie)) ⊕ (¬Engaged(bonnie) ∧ ¬Students(bonnie))",
        ],
        "AcademicCareer(bonnie) ⊕ Chaperone(bonnie) → AcademicCareer(bonnie) ⊕ Inactive(bonnie)",
        "True",
    ),
]


@pytest.mark.parametrize(("premises", "conclusion", "gold"), FOLIO_EXAMPLES)
def test_folio_examples(
    prover: ProverName, premises: list[str], conclusion: str, gold: str
) -> None:
    assert decide(premises, conclusion, prover, timeout_s=10).label == gold


# --- the verifier ----------------------------------------------------------------------------


@pytest.fixture
def verifier() -> Iterator[FOLVerifier]:
    if not _available("e"):
        pytest.skip("E is not installed")
    v = FOLVerifier(prover="e", timeout_s=10)
    yield v
    v.close()


def _problem(answer: str | None = "True", **metadata: object) -> Problem:
    return Problem(id="folio-1", question="...", answer=answer, metadata=metadata)


def _say(text: str) -> Completion:
    return Completion(text, "stop", prompt_tokens=0, completion_tokens=0)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Let me think. So the answer is B.", "False"),
        ("**Answer:** Uncertain", "Uncertain"),
        ("The statement is true, so the final answer is (A)", "True"),
        ("It cannot be determined: Unknown", "Uncertain"),
        ("(C)", "Uncertain"),
        ("The answer is a bit unclear, but the conclusion is False.", "False"),
        ("I have no idea", None),
    ],
)
def test_extract_label(text: str, label: str | None) -> None:
    assert extract_label(text) == label


def test_gold_labels_are_normalised() -> None:
    assert normalize_label("Unknown") == "Uncertain"
    assert normalize_label(" true ") == "True"
    assert normalize_label("Maybe") is None


def test_label_mode(verifier: FOLVerifier) -> None:
    verdict = verifier.verify(_problem("Unknown"), _say("The answer is C"))
    assert (verdict.status, verdict.answer, verdict.details["mode"]) == (
        "correct",
        "Uncertain",
        "label",
    )
    assert verifier.verify(_problem("True"), _say("False.")).status == "incorrect"
    assert verifier.verify(_problem("True"), _say("hmm")).feedback == "no answer found"


FORMALISATION = """Let me formalise it.
**Premises:**
1. ∀x (Man(x) → Mortal(x))   ::: All men are mortal.
2. Man(socrates)
**Conclusion:**
{conclusion}
"""


def test_fol_mode(verifier: FOLVerifier) -> None:
    right = verifier.verify(
        _problem("True"), _say(FORMALISATION.format(conclusion="Mortal(socrates)"))
    )
    assert (right.status, right.answer, right.details["mode"]) == ("correct", "True", "fol")
    wrong = verifier.verify(_problem("True"), _say(FORMALISATION.format(conclusion="Man(plato)")))
    assert (wrong.status, wrong.answer) == ("incorrect", "Uncertain")
    assert "neither the conclusion nor its negation" in wrong.feedback


def test_fol_mode_errors_carry_feedback(verifier: FOLVerifier) -> None:
    broken = verifier.verify(_problem(), _say(FORMALISATION.format(conclusion="Mortal(socrates")))
    assert (broken.status, broken.details["error"]) == ("error", "parse_error")
    assert "conclusion: unexpected end of formula" in broken.feedback
    assert "column 16" in broken.feedback
    contradictory = "Premises:\nP(a)\n¬P(a)\nConclusion: Q(a)"
    verdict = verifier.verify(_problem(), _say(contradictory))
    assert (verdict.status, verdict.details["error"]) == ("error", "inconsistent_premises")


def test_restated_prose_is_not_a_formalisation() -> None:
    text = "Premises: All men are mortal. Socrates is a man.\nConclusion: Socrates is mortal.\nTrue"
    assert extract_formalisation(text) is None
    block = extract_formalisation("Premises: P(a)\n- Q(a)\nConclusion:\n```\nR(a)\n```")
    assert block is not None
    assert (block.premises, block.conclusion) == (["P(a)", "Q(a)"], "R(a)")


def test_gold_from_metadata_formulas(verifier: FOLVerifier) -> None:
    problem = _problem(None, premises_fol=SYLLOGISM, conclusion_fol="¬Mortal(socrates)")
    assert verifier.verify(problem, _say("Answer: False")).status == "correct"
    assert verifier.verify(_problem(None), _say("True")).status == "error"


def test_verify_batch(verifier: FOLVerifier) -> None:
    pairs = [
        (_problem("True"), _say(FORMALISATION.format(conclusion="Mortal(socrates)"))),
        (_problem("False"), _say(FORMALISATION.format(conclusion="¬Mortal(socrates)"))),
        (_problem("Uncertain"), _say("B")),
    ]
    statuses = [v.status for v in verifier.verify_batch(pairs)]
    assert statuses == ["correct", "correct", "incorrect"]
