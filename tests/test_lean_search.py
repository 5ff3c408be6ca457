"""Lean proof search without Lean: best-first tactic search and whole-proof sampling against a
hand-written REPL session (tests/fixtures/lean_tactics/toy_session.json, in the REPL's
documented tactic-mode format) served by a FAKE REPL process
(tests/fixtures/lean_repl/replay_tactic_repl.py), with the tactic proposals of that session
replayed by a FAKE policy (`TranscriptTacticGenerator`). Lean cannot be installed here; what
runs for real is the search, the REPL process handling and protocol, the tactic generator's
cleaning/dedup/scoring, and the Lean verifier's final check. The tactic generator also runs on
the real SmolLM2 engine (slow tier)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from _counting_generator import CountingGenerator
from _scripted_generator import ScriptedGenerator

from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.prompts import load_prompt
from reasoner.runner.metrics import summarize
from reasoner.strategies.base import StrategyConfig
from reasoner.strategies.lean import LeanBestFirst, LeanWholeProof, TacticState
from reasoner.strategies.lean.dojo import DojoEnvironment
from reasoner.strategies.lean.environment import (
    EnvironmentUnavailable,
    StartError,
    statement_with_sorry,
    tactic_outcome,
)
from reasoner.strategies.lean.tactics import (
    TacticGenerator,
    assemble_proof,
    clean_tactic,
    sequence_logprob,
    span_logprob,
    tactic_logprob,
    tactic_span,
)
from reasoner.strategies.sft_export import sft_records
from reasoner.types import (
    Completion,
    GenerationRequest,
    Problem,
    SamplingParams,
    TokenLogprob,
    Trace,
)
from reasoner.verifiers.lean import LeanVerifier
from reasoner.verifiers.lean.protocol import parse_response

FIXTURES = Path(__file__).parent / "fixtures"
SESSION_PATH = FIXTURES / "lean_tactics" / "toy_session.json"
SESSION = json.loads(SESSION_PATH.read_text(encoding="utf-8"))
FAKE_REPL = FIXTURES / "lean_repl" / "replay_tactic_repl.py"
PROPOSALS: dict[str, list[list[Any]]] = SESSION["proposals"]
ROOT, S1, S2, S3, MROOT, _ = list(PROPOSALS)


def problem(name: str) -> Problem:
    statement = SESSION["statements"][name]
    return Problem(name, statement["formal_statement"], None, dict(statement))


def fake_command(log: Path, transcript: Path = SESSION_PATH) -> list[str]:
    return [sys.executable, str(FAKE_REPL), str(transcript), str(log)]


def logged(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


class TranscriptTacticGenerator(Generator):
    """FAKE policy: answers a tactic request with the tactics recorded for the goals in its
    prompt, each as two tokens whose log-probabilities add up to the recorded one; padded to
    n with a repeat of the last at a lower score (the dedup keeps the better copy)."""

    description = "fake:transcript-tactics"

    def __init__(self, overrides: dict[str, list[list[Any]]] | None = None) -> None:
        self.proposals = {**PROPOSALS, **(overrides or {})}
        self.calls: list[int] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.calls.append(len(requests))
        return [self._reply(r) for r in requests]

    def _reply(self, request: GenerationRequest) -> list[Completion]:
        text = "\n".join(m.content for m in request.messages or ())
        goals = max((g for g in self.proposals if g in text), key=len, default=None)
        recorded = self.proposals.get(goals or "", [["sorry", 0.0]])
        n = request.sampling.n
        padded = recorded + [[recorded[-1][0], recorded[-1][1] - 5.0]] * (n - len(recorded))
        out = []
        for tactic, logprob in padded[:n]:
            half = len(tactic) // 2
            tokens = (
                TokenLogprob(tactic[:half], logprob / 2),
                TokenLogprob(tactic[half:], logprob / 2),
            )
            out.append(Completion(tactic, "stop", 10, 2, tokens))
        return out


def config(**options: Any) -> StrategyConfig:
    return StrategyConfig(
        load_prompt("lean_tactic"),
        SamplingParams(temperature=1.0, max_tokens=2048),
        options={"num_tactics": 3, "tactic_timeout_s": 20.0, **options},
    )


def search(
    names: list[str],
    tmp_path: Path,
    generator: Generator | None = None,
    overrides: dict[str, list[list[Any]]] | None = None,
    **options: Any,
) -> tuple[list[Trace], Path, Generator]:
    log = tmp_path / "repl.log"
    verifier_log = tmp_path / "verifier.log"
    generator = generator or TranscriptTacticGenerator(overrides)
    with LeanVerifier(command=fake_command(verifier_log), timeout_s=20.0) as verifier:
        traces = LeanBestFirst().run(
            [problem(n) for n in names],
            generator,
            verifier,
            config(repl_command=fake_command(log), **options),
        )
    return traces, log, generator


def expanded_goals(trace: Trace) -> list[str]:
    nodes = sorted(
        (n for n in trace.tree if n["expanded_at"] is not None), key=lambda n: n["expanded_at"]
    )
    return [n["goals"] for n in nodes]


# --- best-first search ------------------------------------------------------------------


def test_best_first_expands_states_in_order_of_cumulative_logprob(tmp_path: Path) -> None:
    (trace,), _, _ = search(["toy_add"], tmp_path)
    # S1 (-0.2) before S2 (-1.0); S2's child ⊢ 2 + 3 = 5 (-1.3) before S1's (-4.2), which it
    # supersedes: breadth-first would have closed the goal through S1's child instead
    assert expanded_goals(trace) == [ROOT, S1, S2, S3]
    assert trace.verdict.status == "correct", trace.verdict.feedback
    assert trace.prediction == "subst h₁\nsubst h₀\nnorm_num"
    assert trace.verdict.details["proof"] == ["subst h₁", "subst h₀", "norm_num"]
    by_tactic = {(n["parent"], n["tactic"]): n for n in trace.tree if n["tactic"]}
    root_norm_num = by_tactic[(0, "norm_num")]
    assert root_norm_num["status"] == "error" and "unsolved goals" in root_norm_num["message"]
    statuses = [n["status"] for n in trace.tree if n["goals"] == S3]
    assert sorted(statuses) == ["expanded", "superseded"]
    proved = next(n for n in trace.tree if n["status"] == "proved")
    assert proved["score"] == pytest.approx(-1.0 - 0.3 - 0.1)
    assert trace.usage.engine_calls == 4 and trace.usage.verifier_calls == 1
    assert [len(step.completions) for step in trace.steps] == [3, 3, 3, 3]


def test_the_accepted_proof_path_becomes_tactic_sft_records(tmp_path: Path) -> None:
    (trace,), _, _ = search(["toy_add"], tmp_path)
    records = sft_records([trace.to_dict()])
    assert [r["completion"] for r in records] == ["subst h₁", "subst h₀", "norm_num"]
    # each tactic under the prompt of the state it was proposed for
    for record, goals in zip(records, [ROOT, S2, S3], strict=True):
        assert goals in record["messages"][-1]["content"]
    # a search that found nothing gives nothing
    (tmp_path / "limited").mkdir()
    (failed,), _, _ = search(["toy_add"], tmp_path / "limited", max_expansions=1)
    assert "expansion limit" in failed.verdict.feedback and sft_records([failed]) == []


def test_one_engine_call_per_step_for_all_problems(tmp_path: Path) -> None:
    traces, log, generator = search(["toy_add", "toy_mul"], tmp_path)
    assert [t.verdict.status for t in traces] == ["correct", "correct"]
    expansions = [t.verdict.details["expansions"] for t in traces]
    assert expansions == [4, 2]
    # each call holds the problems still searching at that step
    calls = [sum(e > step for e in expansions) for step in range(max(expansions))]
    assert isinstance(generator, TranscriptTacticGenerator) and generator.calls == calls
    # both theorems were opened in one REPL process, importing the header once
    imports = [r for r in logged(log) if r.get("cmd") == "import Mathlib\nimport Aesop"]
    assert len(imports) == 1


def test_a_timed_out_tactic_kills_the_repl_and_open_states_are_replayed(tmp_path: Path) -> None:
    (trace,), log, _ = search(
        ["toy_add"], tmp_path, overrides={S1: [["slow_tactic", -0.1]]}, tactic_timeout_s=1.0
    )
    slow = next(n for n in trace.tree if n["tactic"] == "slow_tactic")
    assert slow["status"] == "error" and "timeout" in slow["message"]
    assert trace.verdict.status == "correct"
    requests = logged(log)
    opened = [i for i, r in enumerate(requests) if "sorry" in r.get("cmd", "")]
    assert len(opened) == 2  # the root again, in the restarted REPL
    # S2 was rebuilt by replaying its path before its tactic ran
    after_restart = requests[opened[1] :]
    assert [r.get("tactic") for r in after_restart if "tactic" in r][:2] == ["subst h₁", "subst h₀"]


def test_a_proof_the_verifier_rejects_does_not_count(tmp_path: Path) -> None:
    # through S1 first: the environment closes the goals, but the final check of
    # `subst h₀; subst h₁; norm_num` has no recorded acceptance, so the verifier says no
    (trace,), _, _ = search(["toy_add"], tmp_path, overrides={S1: [["subst h₁", -0.1]]})
    rejected = [n for n in trace.tree if n["status"] == "rejected"]
    assert len(rejected) == 1 and "rejected" in rejected[0]["message"]
    assert trace.verdict.status == "incorrect" and trace.prediction is None
    assert "no open states left" in trace.verdict.feedback


def test_a_closed_goal_does_not_drop_the_other_states_tactics(tmp_path: Path) -> None:
    """Two states expanded in one step: S1's `omega` closes the proof, and S2's tactic of the
    same step still runs (its child is in the tree), while S1's own later candidate does not."""
    (trace,), log, _ = search(
        ["toy_add"],
        tmp_path,
        overrides={S1: [["omega", -0.1], ["exact h₁", -0.5]]},
        expansions_per_step=2,
        final_check="environment",
    )
    assert trace.verdict.status == "correct" and trace.verdict.details["proof"] == [
        "subst h₀",
        "omega",
    ]
    by_goals = {n["goals"]: n for n in trace.tree if n["status"] == "expanded"}
    s1, s2 = by_goals[S1], by_goals[S2]
    assert s1["expanded_at"] == 1 and s2["expanded_at"] == 2  # popped in the same step
    s2_children = [n for n in trace.tree if n["parent"] == s2["id"]]
    assert [n["tactic"] for n in s2_children] == ["subst h₀"]
    assert s2_children[0]["goals"] == S3
    assert [n["tactic"] for n in trace.tree if n["parent"] == s1["id"]] == ["omega"]
    ran = [r.get("tactic") for r in logged(log) if "tactic" in r]
    assert ran == ["subst h₀", "subst h₁", "norm_num", "omega", "subst h₀"]


def test_a_tactic_is_scored_by_its_own_tokens_not_the_whole_reply() -> None:
    """A chat reply with a fence and an explanation: only the tactic's tokens count, so the
    likely tactic with an unlikely explanation outranks a less likely bare tactic."""

    explained = tokens_of(
        ("```lean\n", -0.01), ("norm", -0.2), ("_num", -0.1), (" [h₀]", -0.2), ("\n```", -0.01),
        ("\nThis", -3.0), (" closes", -4.0), (" it.", -2.0),
    )  # fmt: skip
    bare = tokens_of(("`", -0.1), ("lin", -0.4), ("arith", -0.6), ("`", -0.1))

    class Replies(Generator):
        description = "fake:scored-replies"

        def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
            return [
                [
                    Completion("".join(t.token for t in explained), "stop", 5, 8, explained),
                    Completion("".join(t.token for t in bare), "stop", 5, 4, bare),
                ]
                for _ in requests
            ]

    proposer = TacticGenerator(Replies(), load_prompt("lean_tactic"), SamplingParams(), 2)
    (proposal,) = proposer.propose([(problem("toy_add"), TacticState((ROOT,), ()), 0)])
    assert [(c.tactic, c.sample) for c in proposal.candidates] == [
        ("norm_num [h₀]", 0),
        ("linarith", 1),
    ]
    assert proposal.candidates[0].logprob == pytest.approx(-0.5)
    assert proposal.candidates[1].logprob == pytest.approx(-1.0)


def test_tactic_spans_and_their_logprobs() -> None:
    text = "<think>try simp</think>\n  `simp at h`  \nmore"
    start, end = tactic_span(text) or (0, 0)
    assert text[start:end] == "simp at h"
    # tokens whose decoded text is not the reply's (a split multi-byte character): the tactic
    # is found in the tokens' own text
    odd = Completion(
        "∀ x\nok", "stop", 1, 3, tokens_of(("\ufffd", -1.0), (" x", -0.5), ("\nok", -2.0))
    )
    assert span_logprob(odd, 0, 3) == pytest.approx(-3.5)  # not found: the whole reply
    plain = Completion("a b\nc", "stop", 1, 3, tokens_of(("a", -1.0), (" b", -0.5), ("\nc", -2.0)))
    assert span_logprob(plain, 0, 3) == pytest.approx(-1.5)
    assert tactic_logprob(plain) == pytest.approx(-1.5)


def tokens_of(*pieces: tuple[str, float]) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(text, logprob) for text, logprob in pieces)


def test_the_expansion_limit_stops_a_search(tmp_path: Path) -> None:
    (trace,), _, generator = search(["toy_add"], tmp_path, max_expansions=2)
    assert trace.verdict.status == "incorrect" and "expansion limit (2)" in trace.verdict.feedback
    assert trace.verdict.details["expansions"] == 2
    assert isinstance(generator, TranscriptTacticGenerator) and generator.calls == [1, 1]


def test_without_lean_every_problem_is_an_error_and_nothing_is_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REASONER_LEAN_PROJECT", raising=False)
    generator = TranscriptTacticGenerator()
    traces = LeanBestFirst().run([problem("toy_add")], generator, LeanVerifier(), config())
    assert traces[0].verdict.status == "error"
    assert "elan" in traces[0].verdict.feedback  # the install instructions
    assert generator.calls == []


def test_options_are_checked_before_a_model_is_loaded() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.options\.num_tactcs"):
        LeanBestFirst().validate(config(num_tactcs=2))
    with pytest.raises(ConfigError, match=r"strategy\.n"):
        LeanBestFirst().validate(StrategyConfig(load_prompt("lean_tactic"), SamplingParams(), n=4))


def test_a_recorded_session_replays(tmp_path: Path) -> None:
    """What LeanReplEnvironment(record_to=...) writes is a transcript the fake can serve."""
    recording = tmp_path / "recorded.jsonl"
    log = tmp_path / "repl.log"
    options = {"repl_command": fake_command(log), "record_transcript": str(recording)}
    with LeanVerifier(command=fake_command(tmp_path / "v.log")) as verifier:
        LeanBestFirst().run(
            [problem("toy_add")], TranscriptTacticGenerator(), verifier, config(**options)
        )
    entries = [json.loads(line) for line in recording.read_text(encoding="utf-8").splitlines()]
    assert {"cmd", "tactic"} <= {k for e in entries for k in e["request"]}
    replay_log = tmp_path / "replay.log"
    options = {"repl_command": fake_command(replay_log, recording), "final_check": "environment"}
    (trace,) = LeanBestFirst().run(
        [problem("toy_add")], TranscriptTacticGenerator(), LeanVerifier(), config(**options)
    )
    assert trace.verdict.status == "correct"
    assert trace.prediction == "subst h₁\nsubst h₀\nnorm_num"


# --- the environment's protocol ------------------------------------------------------------


def test_tactic_responses_become_outcomes() -> None:
    def outcome(raw: dict[str, Any]) -> Any:
        return tactic_outcome(parse_response(json.dumps(raw)), ("t",), None)

    assert outcome({"proofState": 3, "goals": ["⊢ 1 = 1"]}).state.goals == ("⊢ 1 = 1",)
    assert outcome({"proofState": 4, "goals": [], "proofStatus": "Completed"}).status == "proved"
    assert outcome({"proofState": 4, "goals": []}).status == "proved"  # older REPLs
    incomplete = outcome(
        {"proofState": 4, "goals": [], "proofStatus": "Incomplete: contains sorry"}
    )
    assert incomplete.status == "error" and "contains sorry" in incomplete.message
    thrown = outcome({"message": "Lean error:\nlinarith failed"})
    assert thrown.status == "error" and thrown.message == "linarith failed"
    logged_error = {
        "proofState": 5,
        "goals": ["⊢ False"],
        "messages": [{"severity": "error", "pos": {"line": 1, "column": 0}, "data": "bad"}],
    }
    assert outcome(logged_error).status == "error"
    sorry = {"proofState": 6, "goals": [], "sorries": [{"proofState": 7, "goal": "⊢ p"}]}
    assert outcome(sorry).status == "error"


def test_statements_get_a_sorry_proof_and_proofs_are_assembled_to_match() -> None:
    assert statement_with_sorry("theorem t : p := by\n") == "theorem t : p := by\n  sorry"
    assert statement_with_sorry("theorem t : p :=") == "theorem t : p := by\n  sorry"
    assert statement_with_sorry("theorem t : p := by sorry") == "theorem t : p := by\n  sorry"
    with pytest.raises(ValueError, match=":="):
        statement_with_sorry("theorem t : p")
    assert assemble_proof("theorem t : p := by\n", ["intro h", "simp"]) == "intro h\nsimp"
    assert assemble_proof("theorem t : p :=", ["simp"]) == "by\n  simp"


def test_tactic_replies_are_cleaned_and_scored() -> None:
    assert clean_tactic("```lean\nnorm_num [h₀]\n```") == "norm_num [h₀]"
    assert clean_tactic("`linarith`\nbecause ...") == "linarith"
    assert clean_tactic("  \n") is None
    completion = Completion("x", "stop", 1, 2, (TokenLogprob("a", -0.5), TokenLogprob("b", -1.0)))
    assert sequence_logprob(completion) == -1.5


# --- lean-dojo ------------------------------------------------------------------------------


class FakeLeanDojo:
    """FAKE stand-in for the lean_dojo module (not installable here): a Dojo that answers
    run_tac from the recorded session's tactic graph, with lean-dojo's result class names."""

    def __init__(self) -> None:
        states = {}  # recorded proofState -> goals
        self.graph: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in SESSION["repl"]:
            response = entry.get("response", {})
            for sorry in response.get("sorries", []):
                states[sorry["proofState"]] = sorry["goal"]
            if "goals" in response:
                states[response["proofState"]] = "\n\n".join(response["goals"])
        for entry in SESSION["repl"]:
            request = entry["request"]
            if "tactic" in request and "response" in entry:
                self.graph[(states[request["proofState"]], request["tactic"])] = entry["response"]
        fake = self

        class TacticState:
            def __init__(self, pp: str) -> None:
                self.pp = pp

        class ProofFinished:
            pass

        class LeanError:
            def __init__(self, error: str) -> None:
                self.error = error

        class Dojo:
            def __init__(self, theorem: tuple[Any, str, str]) -> None:
                self.theorem = theorem
                self.exited = False

            def __enter__(self) -> tuple[Any, Any]:
                return self, TacticState(ROOT)

            def __exit__(self, *exc: object) -> None:
                self.exited = True

            def run_tac(self, state: Any, tactic: str) -> Any:
                response = fake.graph.get((state.pp, tactic))
                if response is None or "message" in response:
                    return LeanError((response or {}).get("message", "unknown tactic"))
                if not response["goals"]:
                    return ProofFinished()
                return TacticState("\n\n".join(response["goals"]))

        self.Dojo = Dojo
        self.opened: list[Any] = []

    def LeanGitRepo(self, url: str, commit: str) -> tuple[str, str]:
        return (url, commit)

    def Theorem(self, repo: Any, path: str, name: str) -> tuple[Any, str, str]:
        return (repo, path, name)


def test_the_dojo_environment_is_interchangeable_with_the_repl() -> None:
    fake = FakeLeanDojo()
    environment = DojoEnvironment(
        "https://example.invalid/repo", "abc123", file_path="Toy.lean", module=fake
    )

    class ViaDojo(LeanBestFirst):
        environment_factory = staticmethod(lambda options: environment)

    (trace,) = ViaDojo().run(
        [problem("toy_add")],
        TranscriptTacticGenerator(),
        LeanVerifier(),
        config(final_check="environment"),
    )
    assert trace.verdict.status == "correct"
    assert trace.prediction == "subst h₁\nsubst h₀\nnorm_num"
    assert expanded_goals(trace) == [ROOT, S1, S2, S3]
    assert environment._open == {}  # finish() exited the Dojo


def test_the_dojo_environment_needs_lean_dojo_and_a_traced_repository() -> None:
    with pytest.raises(EnvironmentUnavailable, match="pip install"):
        DojoEnvironment("u", "c", file_path="f").start(problem("toy_add"))
    with pytest.raises(StartError, match="repo_url, commit and file_path"):
        DojoEnvironment(module=FakeLeanDojo()).start(problem("toy_add"))


# --- whole-proof sampling -------------------------------------------------------------------


def test_whole_proof_sampling_picks_a_verified_proof_and_reports_pass_at_k(tmp_path: Path) -> None:
    def script(request: GenerationRequest, call: int) -> list[str]:
        return ["```lean\nomega\n```", "```lean\nsubst h₁\nsubst h₀\nnorm_num\n```"]

    generator = ScriptedGenerator(script)
    with LeanVerifier(command=fake_command(tmp_path / "v.log"), timeout_s=20.0) as verifier:
        (trace,) = LeanWholeProof().run(
            [problem("toy_add")],
            generator,
            verifier,
            StrategyConfig(load_prompt("lean_proof"), SamplingParams(temperature=0.7), n=2),
        )
    assert generator.calls == [1]
    assert [v.status for v in trace.samples] == ["error", "correct"]
    assert trace.verdict.status == "correct" and "norm_num" in (trace.prediction or "")
    summary = summarize([trace.to_dict()])
    assert summary["pass@k"]["1"] == pytest.approx(0.5) and summary["pass@k"]["2"] == 1.0


# --- the tactic generator on a real model ------------------------------------------------------


@pytest.mark.slow
def test_the_tactic_generator_batches_states_and_scores_by_logprob(vllm_generator: Any) -> None:
    counting = CountingGenerator(vllm_generator)
    proposer = TacticGenerator(
        counting, load_prompt("lean_tactic"), SamplingParams(temperature=1.0, max_tokens=12), 4
    )
    items = [
        (problem("toy_add"), TacticState((ROOT,)), 1),
        (problem("toy_mul"), TacticState((MROOT,)), 2),
    ]
    proposals = proposer.propose(items)
    assert counting.calls == [2]
    for proposal in proposals:
        assert proposal.request.sampling.n == 4 and proposal.request.sampling.logprobs == 1
        assert len(proposal.completions) == 4
        tactics = [c.tactic for c in proposal.candidates]
        assert len(set(tactics)) == len(tactics)
        for candidate in proposal.candidates:
            completion = proposal.completions[candidate.sample]
            assert completion.logprobs, "the backend must return logprobs when asked"
            # the tactic's own tokens: at least the whole reply's log-probability
            assert candidate.logprob == pytest.approx(tactic_logprob(completion))
            assert candidate.logprob >= sum(t.logprob for t in completion.logprobs)
            assert candidate.tactic == clean_tactic(completion.text)
        assert [c.logprob for c in proposal.candidates] == sorted(
            (c.logprob for c in proposal.candidates), reverse=True
        )
        assert len(proposal.candidates) + len(proposal.rejected) <= 4


@pytest.mark.slow
def test_a_search_with_a_real_model_records_every_step(vllm_generator: Any, tmp_path: Path) -> None:
    counting = CountingGenerator(vllm_generator)
    traces, _, _ = search(
        ["toy_add"], tmp_path, generator=counting, max_expansions=2, tactic_max_tokens=12
    )
    (trace,) = traces
    assert len(counting.calls) == len(trace.steps) == trace.usage.engine_calls
    children = [n for n in trace.tree if n["parent"] is not None]
    assert trace.verdict.status in ("correct", "incorrect")
    for node in children:
        parent = trace.tree[node["parent"]]
        assert node["score"] == pytest.approx(parent["score"] + node["logprob"])
        assert node["step"] is not None and node["step"] < len(trace.steps)
