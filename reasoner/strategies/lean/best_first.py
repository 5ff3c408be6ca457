"""`lean-best-first`: best-first tactic search with Lean in the loop (GPT-f, ReProver,
InternLM-StepProver, BFS-Prover).

Each problem keeps a priority queue of open proof states, ranked by the cumulative
log-probability of the tactics that led to them. A search step pops the best
`expansions_per_step` states of every unfinished problem, asks the tactic generator for
`num_tactics` samples per state (one engine call for all states of all problems), runs each
distinct tactic in the tactic environment, and queues the states that come back. A state seen
before is queued again only if it was reached with a better score (the worse copy is marked
`superseded`). A tactic that closes every goal ends the search once the run's verifier (the
Lean verifier: whole proof, axioms checked) accepts the assembled proof; one it rejects is
marked `rejected` and the search goes on. A state's tactics run until one closes the proof
(its remaining candidates of that step are not tried, as in ReProver); the other states
expanded in the same step run all of theirs.

Recorded: a Step per expanded state (its prompt and the K sampled completions, no per-sample
verdicts: a tactic is not an answer), and `tree` with every node (tactic, goals, score, status,
Lean's message, and the step and sample it came from) - the SFT export reads the proof path
from it. Limits: `max_expansions` per problem, `max_depth`, and the strategy budget.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoner.errors import ConfigError
from reasoner.prompts import PromptTemplate, load_prompt
from reasoner.strategies.base import (
    Batch,
    Strategy,
    StrategyConfig,
    charge_call,
    parse_options,
    problem_seed,
)
from reasoner.strategies.lean.environment import (
    EnvironmentUnavailable,
    LeanReplEnvironment,
    StartError,
    TacticEnvironment,
    TacticOutcome,
    TacticState,
)
from reasoner.strategies.lean.tactics import (
    Proposal,
    TacticCandidate,
    TacticGenerator,
    assemble_proof,
)
from reasoner.types import Completion, Problem, Step, Trace, Usage, Verdict
from reasoner.verifiers.base import Verifier

_TEXT = 2000  # goals kept per tree node
_MESSAGE = 500


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment: Literal["repl", "dojo"] = "repl"
    num_tactics: int = Field(8, ge=1)  # samples per expanded state
    expansions_per_step: int = Field(1, ge=1)  # states per problem per engine call
    max_expansions: int = Field(64, ge=1)  # per problem
    max_depth: int = Field(32, ge=1)
    tactic_max_tokens: int = Field(128, ge=1)
    prompt: str = "lean_tactic"
    allow_native_decide: bool = False
    #: "verifier": the run's verifier checks the assembled proof; "environment": trust the
    #: environment's "no goals left" (for lean-dojo users without the REPL)
    final_check: Literal["verifier", "environment"] = "verifier"
    # the REPL environment (defaults: REASONER_LEAN_PROJECT / REASONER_LEAN_REPL)
    lean_project: str | None = None
    lean_repl: str | None = None
    repl_command: list[str] | None = None  # any command that speaks the REPL protocol
    repl_workers: int = Field(1, ge=1)
    tactic_timeout_s: float = Field(60.0, gt=0)
    import_timeout_s: float = Field(600.0, gt=0)
    memory_limit_mb: int | None = 32768
    record_transcript: str | None = None  # append every REPL request/response to this JSONL
    # the lean-dojo environment (or per problem: metadata repo_url, commit, file_path)
    dojo_repo_url: str | None = None
    dojo_commit: str | None = None
    dojo_file_path: str | None = None


def make_environment(options: Options) -> TacticEnvironment:
    if options.environment == "dojo":
        from reasoner.strategies.lean.dojo import DojoEnvironment

        return DojoEnvironment(
            options.dojo_repo_url, options.dojo_commit, file_path=options.dojo_file_path
        )
    return LeanReplEnvironment(
        options.lean_project,
        options.lean_repl,
        command=options.repl_command,
        workers=options.repl_workers,
        timeout_s=options.tactic_timeout_s,
        import_timeout_s=options.import_timeout_s,
        memory_limit_mb=options.memory_limit_mb,
        record_to=options.record_transcript,
    )


NodeStatus = Literal[
    "open", "expanded", "proved", "rejected", "error", "duplicate", "superseded", "too_deep"
]


@dataclass
class _Node:
    id: int
    parent: int | None
    tactic: str | None
    state: TacticState | None
    score: float  # cumulative log-probability from the root
    logprob: float  # this tactic's
    depth: int
    status: NodeStatus
    message: str = ""
    step: int | None = None  # index into the problem's steps of the request that proposed it
    sample: int | None = None
    expanded_at: int | None = None  # the how-many-th expansion of its problem

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "tactic": self.tactic,
            "goals": None if self.state is None else self.state.pp[:_TEXT],
            "score": self.score,
            "logprob": self.logprob,
            "depth": self.depth,
            "status": self.status,
            "message": self.message[:_MESSAGE],
            "step": self.step,
            "sample": self.sample,
            "expanded_at": self.expanded_at,
        }


@dataclass
class _Search:
    problem: Problem
    started: float
    nodes: list[_Node] = field(default_factory=list)
    heap: list[tuple[float, int]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    steps: list[Step] = field(default_factory=list)
    expansions: int = 0
    tactic_calls: int = 0
    proof: _Node | None = None
    proof_verdict: Verdict | None = None
    failure: Verdict | None = None  # the search could not start
    stopped: str = ""
    done: bool = False

    def push(self, node: _Node) -> None:
        self.nodes.append(node)
        if node.status == "open":
            heapq.heappush(self.heap, (-node.score, node.id))

    def pop(self) -> _Node | None:
        while self.heap:
            _, node_id = heapq.heappop(self.heap)
            node = self.nodes[node_id]
            if node.status == "open":
                return node
        return None

    def path(self, node: _Node) -> list[_Node]:
        path = []
        current: _Node | None = node
        while current is not None and current.parent is not None:
            path.append(current)
            current = self.nodes[current.parent]
        return path[::-1]


class LeanBestFirst(Strategy):
    name: ClassVar[str] = "lean-best-first"
    default_temperature: ClassVar[float] = 1.0
    #: builds the tactic environment from the options; tests and embedders may replace it
    environment_factory: Callable[[Options], TacticEnvironment] = staticmethod(make_environment)

    def prompts(self, config: StrategyConfig) -> list[PromptTemplate]:
        return [load_prompt(parse_options(Options, config.options, self.name).prompt)]

    def validate(self, config: StrategyConfig) -> None:
        options = parse_options(Options, config.options, self.name)
        load_prompt(options.prompt)
        if config.n != 1:
            raise ConfigError(
                "lean-best-first samples strategy.options.num_tactics tactics per state; "
                f"leave strategy.n at 1 (got {config.n})"
            )

    def solve(self, batch: Batch) -> None:
        verifier, config = batch.verifier, batch.config
        self.validate(config)
        options = parse_options(Options, config.options, self.name)
        environment = self.environment_factory(options)
        sampling = dataclasses.replace(config.sampling, max_tokens=options.tactic_max_tokens)
        proposer = TacticGenerator(
            batch.generator,
            load_prompt(options.prompt),
            sampling,
            options.num_tactics,
            options.allow_native_decide,
        )
        started = time.perf_counter()
        searches = [_Search(problem, started) for problem in batch.problems]

        def finish(index: int) -> None:
            search = searches[index]
            search.done = True
            environment.finish(search.problem)
            batch.finish(index, self._trace(search, options))

        try:
            roots = _map(self._start, [(environment, s) for s in searches], environment)
            for search, root in zip(searches, roots, strict=True):
                if root is not None:
                    search.push(root)
            for index, search in enumerate(searches):
                if search.failure is not None:
                    finish(index)
            while True:
                active = [i for i, s in enumerate(searches) if not s.done]
                if not active:
                    break
                self._step(searches, active, proposer, environment, verifier, config, options)
                for index in active:
                    search = searches[index]
                    if search.proof is not None:
                        search.stopped = "proved"
                    elif search.expansions >= options.max_expansions:
                        search.stopped = f"expansion limit ({options.max_expansions})"
                    elif config.budget.exhausted(search.usage):
                        search.stopped = "budget exhausted"
                    elif not any(search.nodes[i].status == "open" for _, i in search.heap):
                        search.stopped = "no open states left"
                    if search.stopped:
                        finish(index)
        finally:
            environment.close()

    @staticmethod
    def _start(args: tuple[TacticEnvironment, _Search]) -> _Node | None:
        environment, search = args
        try:
            state = environment.start(search.problem)
        except (EnvironmentUnavailable, StartError) as exc:
            search.failure = Verdict("error", 0.0, str(exc), None, {"error": type(exc).__name__})
            return None
        return _Node(0, None, None, state, 0.0, 0.0, 0, "open")

    def _step(
        self,
        searches: list[_Search],
        active: list[int],
        proposer: TacticGenerator,
        environment: TacticEnvironment,
        verifier: Verifier,
        config: StrategyConfig,
        options: Options,
    ) -> None:
        """One engine call for the best states of every active problem, then their tactics."""
        picked: list[tuple[_Search, _Node]] = []
        for index in active:
            search = searches[index]
            for _ in range(options.expansions_per_step):
                node = search.pop()
                if node is None:
                    break
                node.status = "expanded"
                node.expanded_at = search.expansions
                search.expansions += 1
                picked.append((search, node))
        if not picked:
            return
        items = [
            (
                search.problem,
                node.state,
                problem_seed(config.seed, f"{search.problem.id}\0node:{node.id}"),
            )
            for search, node in picked
            if node.state is not None
        ]
        proposals = proposer.propose(items)
        charge_call((s.usage, p.completions) for (s, _), p in zip(picked, proposals, strict=True))
        work: dict[int, list[tuple[_Node, Proposal, int]]] = {}
        for (search, node), proposal in zip(picked, proposals, strict=True):
            search.steps.append(Step(proposal.request, proposal.completions, []))
            work.setdefault(id(search), []).append((node, proposal, len(search.steps) - 1))

        by_id = {id(s): s for s, _ in picked}
        jobs = [(by_id[key], expansions, environment) for key, expansions in work.items()]
        results = _map(_run_tactics, jobs, environment)

        proved: list[tuple[_Search, _Node]] = []
        for (search, _, _), outcomes in zip(jobs, results, strict=True):
            for parent, candidate, step, outcome in outcomes:
                search.tactic_calls += 1
                child = self._child(search, parent, candidate, step, outcome, options)
                if child.status == "proved":
                    proved.append((search, child))
        if proved:
            self._check_proofs(proved, verifier, options)

    def _child(
        self,
        search: _Search,
        parent: _Node,
        candidate: TacticCandidate,
        step: int,
        outcome: TacticOutcome,
        options: Options,
    ) -> _Node:
        score = parent.score + candidate.logprob
        node = _Node(
            id=len(search.nodes),
            parent=parent.id,
            tactic=candidate.tactic,
            state=outcome.state,
            score=score,
            logprob=candidate.logprob,
            depth=parent.depth + 1,
            status="open",
            message=outcome.message,
            step=step,
            sample=candidate.sample,
        )
        if outcome.status == "error":
            node.status = "error"
        elif outcome.status == "proved":
            node.status = "proved"
        elif node.depth >= options.max_depth:
            node.status = "too_deep"
        else:
            key = outcome.state.pp if outcome.state is not None else ""
            known = search.seen.get(key)
            if known is not None:
                previous = search.nodes[known]
                if previous.status == "open" and score > previous.score:
                    previous.status = "superseded"
                    search.seen[key] = node.id
                else:
                    node.status = "duplicate"
            else:
                search.seen[key] = node.id
        search.push(node)
        return node

    def _check_proofs(
        self,
        proved: list[tuple[_Search, _Node]],
        verifier: Verifier,
        options: Options,
    ) -> None:
        """The assembled proof of each node that closed its goals, checked by the run's
        verifier in one batch; the first accepted proof of a problem ends its search."""
        pending = [(s, n) for s, n in proved if s.proof is None]
        if options.final_check == "environment":
            verdicts = [
                Verdict("correct", 1.0, "the tactic environment closed every goal") for _ in pending
            ]
        else:
            pairs = [
                (s.problem, Completion(self._proof_text(s, n), "stop", 0, 0)) for s, n in pending
            ]
            verdicts = verifier.verify_batch(pairs)
        for (search, node), verdict in zip(pending, verdicts, strict=True):
            search.usage.verifier_calls += int(options.final_check == "verifier")
            if search.proof is not None:
                continue
            if verdict.is_correct:
                search.proof, search.proof_verdict = node, verdict
            else:
                node.status = "rejected"
                node.message = f"the verifier rejected the proof: {verdict.feedback}"

    @staticmethod
    def _proof_text(search: _Search, node: _Node) -> str:
        tactics = [n.tactic for n in search.path(node) if n.tactic is not None]
        statement = str(search.problem.metadata.get("formal_statement", ""))
        return assemble_proof(statement, tactics)

    def _trace(self, search: _Search, options: Options) -> Trace:
        details: dict[str, Any] = {
            "expansions": search.expansions,
            "tactic_calls": search.tactic_calls,
            "nodes": len(search.nodes),
            "stopped": search.stopped,
        }
        prediction = None
        if search.failure is not None:
            verdict = dataclasses.replace(
                search.failure, details={**search.failure.details, **details}
            )
        elif search.proof is not None and search.proof_verdict is not None:
            prediction = self._proof_text(search, search.proof)
            path = [n.tactic for n in search.path(search.proof)]
            verdict = dataclasses.replace(
                search.proof_verdict,
                details={**search.proof_verdict.details, **details, "proof": path},
            )
        else:
            feedback = f"no proof found: {search.stopped} after {search.expansions} expansions"
            verdict = Verdict("incorrect", 0.0, feedback, None, details)
        search.usage.wall_time_s = time.perf_counter() - search.started
        return Trace(
            problem=search.problem,
            steps=search.steps,
            prediction=prediction,
            verdict=verdict,
            usage=search.usage,
            tree=[node.to_dict() for node in search.nodes],
        )


def _run_tactics(
    job: tuple[_Search, list[tuple[_Node, Proposal, int]], TacticEnvironment],
) -> list[tuple[_Node, TacticCandidate, int, TacticOutcome]]:
    """One problem's tactics of a step, state by state in rank order. A state stops at its
    first tactic that closes the proof (ReProver's expansion loop); the step's other states
    still run all of theirs, since they were popped from the queue and would otherwise be
    lost should the verifier reject that proof."""
    search, expansions, environment = job
    outcomes = []
    for node, proposal, step in expansions:
        assert node.state is not None
        for candidate in proposal.candidates:
            outcome = environment.run_tactic(search.problem, node.state, candidate.tactic)
            outcomes.append((node, candidate, step, outcome))
            if outcome.status == "proved":
                break
    return outcomes


def _map(
    function: Callable[[Any], Any], items: Sequence[Any], environment: TacticEnvironment
) -> list[Any]:
    """Problems in parallel where the environment allows it; in this thread otherwise (Dojo's
    timeouts are SIGALRM, main thread only)."""
    if environment.max_concurrency > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=min(environment.max_concurrency, len(items))) as pool:
            return list(pool.map(function, items))
    return [function(item) for item in items]
