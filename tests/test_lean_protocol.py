"""The Lean verifier without Lean: the protocol functions and the verdict logic against
hand-written transcripts in the REPL's documented format (tests/fixtures/lean_repl/), and the
process handling against a FAKE REPL script that replays them (Lean cannot be installed here)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reasoner.types import Completion, Problem
from reasoner.verifiers.lean import INSTALL_INSTRUCTIONS, LeanVerifier
from reasoner.verifiers.lean.protocol import (
    ProtocolError,
    ResponseFramer,
    encode_command,
    parse_axioms,
    parse_response,
)
from reasoner.verifiers.lean.repl import LeanRepl, LeanReplPool, LeanReplTimeout, _pick
from reasoner.verifiers.lean.source import SourceError, build_source, split_header
from reasoner.verifiers.lean.verifier import judge

FIXTURES = Path(__file__).parent / "fixtures" / "lean_repl"
TRANSCRIPT = FIXTURES / "minif2f_session.jsonl"
FAKE_REPL = FIXTURES / "replay_repl.py"
# One preamble line, as the fixture assumes (the theorem starts on line 3 of the command).
HEADER = "import Mathlib\nimport Aesop\n\nopen BigOperators Real Nat Topology Rat\n\n"


def recorded(match: str) -> dict[str, Any]:
    for line in TRANSCRIPT.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("match") == match:
            response: dict[str, Any] = entry["response"]
            return response
    raise KeyError(match)


def problem(name: str) -> Problem:
    statement = f"theorem {name} (x : ℝ) (h₀ : x = 2) : x < 3 := by\n"
    return Problem(name, "", metadata={"formal_statement": statement, "header": HEADER})


def completion(text: str) -> Completion:
    return Completion(text, "stop", 0, 0)


# --- protocol ---------------------------------------------------------------------------


def test_encode_command_is_one_json_line_then_a_blank_line() -> None:
    raw = encode_command("theorem t : 1 = 1 := by\n  rfl\n\n", env=3).decode()
    assert raw.endswith("}\n\n") and raw.count("\n") == 2
    assert json.loads(raw) == {"cmd": "theorem t : 1 = 1 := by\n  rfl\n\n", "env": 3}
    assert json.loads(encode_command("import Mathlib")) == {"cmd": "import Mathlib"}


def test_framer_joins_pretty_printed_responses_and_skips_stray_blank_lines() -> None:
    framer = ResponseFramer()
    text = json.dumps(recorded("theorem thm_wrong"), indent=2) + "\n\n"
    lines = ["\n", *text.splitlines(keepends=True)]
    out = [framer.push(line) for line in lines]
    done = [o for o in out if o is not None]
    assert len(done) == 1 and json.loads(done[0]) == recorded("theorem thm_wrong")
    assert framer.pending == ""


def test_parse_response_reads_messages_sorries_and_repl_errors() -> None:
    wrong = parse_response(json.dumps(recorded("theorem thm_wrong")))
    assert wrong.env == 1 and len(wrong.errors) == 2
    assert (wrong.errors[0].line, wrong.errors[0].column) == (4, 2)
    assert wrong.errors[0].describe(line_offset=2).startswith("2:2: error: linarith failed")
    clean = parse_response('{"env": 0}')
    assert clean.messages == () and clean.sorries == () and clean.repl_error is None
    assert len(parse_response(json.dumps(recorded("theorem thm_sorry"))).sorries) == 1
    refused = parse_response('{"message": "Unknown environment."}')
    assert refused.repl_error == "Unknown environment." and refused.env is None
    with pytest.raises(ProtocolError):
        parse_response("uncaught exception: out of memory")


def test_parse_axioms_both_forms() -> None:
    ok = parse_response(json.dumps(recorded("#print axioms thm_ok")))
    assert parse_axioms(ok, "thm_ok") == ["propext", "Classical.choice", "Quot.sound"]
    rfl = parse_response(json.dumps(recorded("#print axioms thm_rfl")))
    assert parse_axioms(rfl, "thm_rfl") == []
    assert parse_axioms(ok, "other") is None


# --- completion rules -------------------------------------------------------------------

STATEMENT = "theorem t (x : ℝ) (h₀ : x = 2) : x < 3 := by\n"


def test_tactics_are_appended_and_indented() -> None:
    src = build_source(STATEMENT, "rw [h₀]\nnorm_num")
    assert src.mode == "proof" and src.theorem_name == "t"
    assert src.code == "theorem t (x : ℝ) (h₀ : x = 2) : x < 3 := by\n  rw [h₀]\n  norm_num\n"
    assert build_source(STATEMENT, "by\n  rw [h₀]\n  norm_num").code == src.code


def test_last_lean_block_and_imports_dropped() -> None:
    text = "try:\n```lean\nsimp\n```\nbetter:\n```lean4\nimport Mathlib\nlinarith\n```\n"
    assert build_source(STATEMENT, text).code.endswith(":= by\n  linarith\n")


def test_full_theorem_kept_and_changed_statement_rejected() -> None:
    full = (
        "lemma helper : (2 : ℝ) < 3 := by norm_num\n\n"
        "theorem t (x : ℝ)\n (h₀ : x = 2) : x < 3 := by\n  linarith"
    )
    src = build_source(STATEMENT, f"```lean\n{full}\n```")
    assert src.mode == "theorem" and src.code == full + "\n"
    with pytest.raises(SourceError, match="statement"):
        build_source(STATEMENT, "theorem t (x : ℝ) (h₀ : x = 2) : x < 4 := by\n  linarith")
    with pytest.raises(SourceError):
        build_source(STATEMENT, "```lean\n```")


def test_term_mode_statement_and_trailing_sorry() -> None:
    assert build_source("theorem t : 1 = 1 :=", "rfl").code == "theorem t : 1 = 1 :=\nrfl\n"
    assert build_source("theorem t : 1 = 1 := by sorry", "rfl").code == (
        "theorem t : 1 = 1 := by\n  rfl\n"
    )


def test_split_header_keeps_imports_apart() -> None:
    minif2f = "import Mathlib\nimport Aesop\n\nset_option maxHeartbeats 0\n\nopen Real Nat\n\n"
    imports, preamble = split_header(minif2f)
    assert imports == "import Mathlib\nimport Aesop"
    assert preamble == "set_option maxHeartbeats 0\n\nopen Real Nat"


# --- decision logic on recorded responses -----------------------------------------------


def _judge(name: str, allow_native: bool = False) -> Any:
    src = build_source(f"theorem {name} : True := by\n", "trivial")
    proof = parse_response(json.dumps(recorded(f"theorem {name}")))
    try:
        axioms = parse_response(json.dumps(recorded(f"#print axioms {name}")))
    except KeyError:
        axioms = None
    return judge(src, proof, axioms, line_offset=2, allow_native_decide=allow_native)


def test_judge_on_recorded_responses() -> None:
    assert _judge("thm_ok").status == "correct"
    assert _judge("thm_rfl").status == "correct"
    wrong = _judge("thm_wrong")
    assert wrong.status == "incorrect" and wrong.feedback.startswith("2:2: error: linarith")
    assert "(and 1 more errors)" in wrong.feedback
    assert _judge("thm_sorry").status == "incorrect"
    assert "sorry" in _judge("thm_term_sorry").feedback
    assert "native_decide" in _judge("thm_native").feedback
    assert _judge("thm_native", allow_native=True).status == "correct"


# --- the REPL process, driven against the FAKE replay script ----------------------------


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "commands.jsonl"


def fake_command(log: Path) -> list[str]:
    return [sys.executable, str(FAKE_REPL), str(TRANSCRIPT), str(log)]


def sent(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def verifier(log: Path) -> Iterator[LeanVerifier]:
    v = LeanVerifier(command=fake_command(log), timeout_s=1.0, import_timeout_s=10.0)
    yield v
    v.close()


def test_success_and_header_env_reuse(verifier: LeanVerifier, log: Path) -> None:
    first = verifier.verify(problem("thm_ok"), completion("rw [h₀]\nnorm_num"))
    assert first.status == "correct", first.feedback
    assert first.details["axioms"] == ["propext", "Classical.choice", "Quot.sound"]
    again = verifier.verify(problem("thm_ok"), completion("```lean\nlinarith\n```"))
    assert again.status == "correct"
    cmds = sent(log)
    imports = [c for c in cmds if c["cmd"].startswith("import")]
    assert len(imports) == 1 and "env" not in imports[0]
    proofs = [c for c in cmds if "theorem thm_ok" in c["cmd"]]
    assert [p["env"] for p in proofs] == [0, 0]
    assert proofs[1]["cmd"].startswith("open BigOperators Real Nat Topology Rat\n\ntheorem thm_ok")
    axioms = [c for c in cmds if c["cmd"] == "#print axioms thm_ok"]
    assert [a["env"] for a in axioms] == [1, 3]  # each in the env its proof produced


def test_error_sorry_and_native_decide(verifier: LeanVerifier, log: Path) -> None:
    wrong = verifier.verify(problem("thm_wrong"), completion("nlinarith\ndone"))
    assert wrong.status == "incorrect"
    assert wrong.feedback.startswith("2:2: error: linarith failed to find a contradiction")
    sorry = verifier.verify(problem("thm_sorry"), completion("sorry"))
    assert sorry.status == "incorrect" and "sorry" in sorry.feedback
    assert not any(c["cmd"].startswith("#print axioms thm_sorry") for c in sent(log))
    term_sorry = verifier.verify(problem("thm_term_sorry"), completion("exact sorry"))
    assert term_sorry.status == "incorrect" and "sorry" in term_sorry.feedback
    native = verifier.verify(problem("thm_native"), completion("native_decide"))
    assert native.status == "incorrect" and "native_decide" in native.feedback


def test_native_decide_allowed_when_configured(log: Path) -> None:
    with LeanVerifier(command=fake_command(log), allow_native_decide=True) as v:
        assert v.verify(problem("thm_native"), completion("native_decide")).status == "correct"


def test_timeout_is_an_error_and_the_pool_recovers(verifier: LeanVerifier, log: Path) -> None:
    slow = verifier.verify(problem("thm_slow"), completion("simp"))
    assert slow.status == "error" and "longer than 1s" in slow.feedback
    assert verifier.verify(problem("thm_ok"), completion("simp")).status == "correct"
    # the killed REPL took its imported env with it: the header is imported again
    assert sum(c["cmd"].startswith("import") for c in sent(log)) == 2


def test_crash_is_an_error_and_the_repl_restarts(log: Path) -> None:
    repl = LeanRepl(fake_command(log), timeout_s=5.0)
    try:
        assert repl.run_with_imports("import Mathlib", "theorem thm_ok : True").env == 1
        first_pid = repl.pid
        with pytest.raises(Exception, match="exited"):
            repl.run_with_imports("import Mathlib", "theorem thm_crash : True")
        assert repl.run_with_imports("import Mathlib", "theorem thm_ok : True").env == 1
        assert repl.starts == 2 and repl.pid != first_pid
    finally:
        repl.close()


def test_crash_verdict(verifier: LeanVerifier) -> None:
    crash = verifier.verify(problem("thm_crash"), completion("simp"))
    assert crash.status == "error" and "exited" in crash.feedback
    assert verifier.verify(problem("thm_ok"), completion("simp")).status == "correct"


def test_timeout_kills_the_process_group(log: Path) -> None:
    pool = LeanReplPool(1, fake_command(log), timeout_s=0.5)
    try:
        with pytest.raises(LeanReplTimeout):
            pool.run_with_imports("import Mathlib", "theorem thm_slow : True")
        assert pool.repls[0].pid is None
    finally:
        pool.close()


def test_pool_prefers_a_repl_with_the_header_loaded(log: Path) -> None:
    pool = LeanReplPool(2, fake_command(log))
    try:
        b = pool.repls[1]
        b.header_env("import Mathlib")
        assert _pick(list(pool.repls), "import Mathlib") is b
        assert _pick(list(pool.repls), "import Other") is pool.repls[0]
    finally:
        pool.close()


def test_lean_missing_is_an_error_with_install_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with LeanVerifier() as v:
        verdict = v.verify(problem("thm_ok"), completion("simp"))
    assert verdict.status == "error"
    assert "`lake` is not on PATH" in verdict.feedback and INSTALL_INSTRUCTIONS in verdict.feedback
    assert "elan-init.sh" in verdict.feedback and "leanprover-community/repl" in verdict.feedback
