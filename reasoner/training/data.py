"""Training records from run folders, data manifests or any HF-datasets file.

Records are plain dicts in TRL's conversational formats, so they go to `datasets.Dataset.from_list`
unchanged: SFT `{"prompt": [messages], "completion": [assistant message]}`, DPO `{"prompt",
"chosen", "rejected"}`. Every record also carries the problem `id`, its `question` and gold
`answer` (what the ZO reward objective scores against). A verifier `error` is never read as a
wrong answer: such completions are left out of both sides.

Problems are told apart by their question text, normalised and hashed
(`reasoner.runner.heldout`), never by `id`, which is a row position that repeats across splits:
a held-out slice (`skip` / `limit`) is cut between problems, reference solutions are matched on
the question, and training refuses eval records that share a question with its data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.errors import ConfigError, DatasetError
from reasoner.prompts import load_prompt
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.runner.heldout import question_hash, require_disjoint, write_question_hashes
from reasoner.runs import read_results
from reasoner.strategies.sft_export import is_tactic_tree, proof_path
from reasoner.training.config import DataSettings
from reasoner.types import Completion, Problem
from reasoner.verifiers.base import Verifier

logger = logging.getLogger(__name__)

Record = dict[str, Any]
Message = dict[str, str]

# columns each stage reads; a record may carry more (id, answer, ...)
STAGE_COLUMNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "sft": (("prompt", "completion"), ("messages",), ("text",)),
    "dpo": (("prompt", "chosen", "rejected"),),
    "zo-loss": (("prompt", "completion"),),
    "zo-reward": (("prompt", "answer"),),
}


# --- run folders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One sampled completion of a run, with the prompt it answered and its verdict."""

    problem: Problem
    prompt: list[Message] | str
    text: str
    finish_reason: str
    status: str  # correct / incorrect / error

    @property
    def prompt_key(self) -> str:
        return json.dumps(self.prompt, sort_keys=True)


def _request_prompt(request: dict[str, Any], where: str) -> list[Message] | str:
    if request.get("messages") is not None:
        return [{"role": m["role"], "content": m["content"]} for m in request["messages"]]
    if request.get("prompt") is not None:
        return str(request["prompt"])
    raise DatasetError(f"{where}: the request has neither messages nor a prompt")


def run_candidates(
    run_folders: Sequence[str | Path], verifier: Verifier | None = None
) -> list[Candidate]:
    """Every completion of every step. With `verifier`, completions are checked again against
    the gold answer (for strategies whose step verdicts come from a scorer, not the verifier);
    otherwise the verdicts recorded in the run are used. A proof search's row (a tree of
    tactics) gives the tactics on its accepted proof, each under the prompt of its state."""
    candidates: list[Candidate] = []
    tactics: list[Candidate] = []  # verified by the proof check, not against a gold answer
    unverified = 0
    for folder in run_folders:
        for number, row in enumerate(read_results(folder), start=1):
            where = f"{folder}/results.jsonl:{number}"
            try:
                problem = Problem(**row["problem"])
                steps = row["steps"]
            except (KeyError, TypeError) as exc:
                raise DatasetError(f"{where}: not a Trace row ({exc})") from None
            if is_tactic_tree(row):  # a proof search: the tactics on the path Lean accepted
                for node in proof_path(row):
                    prompt = _request_prompt(steps[node["step"]]["request"], where)
                    tactics.append(Candidate(problem, prompt, node["tactic"], "stop", "correct"))
                continue
            for step in steps:
                prompt = _request_prompt(step["request"], where)
                completions = step["completions"]
                verdicts = step.get("verdicts") or []
                if verifier is None and len(verdicts) != len(completions):
                    unverified += len(completions)
                    continue
                for i, completion in enumerate(completions):
                    status = verdicts[i]["status"] if verifier is None else "unchecked"
                    candidates.append(
                        Candidate(
                            problem,
                            prompt,
                            completion["text"],
                            completion["finish_reason"],
                            status,
                        )
                    )
    if verifier is not None and candidates:
        verdicts_out = verifier.verify_batch(
            [(c.problem, Completion(c.text, "stop", 0, 0)) for c in candidates]
        )
        candidates = [
            Candidate(c.problem, c.prompt, c.text, c.finish_reason, v.status)
            for c, v in zip(candidates, verdicts_out, strict=True)
        ]
    if unverified:
        logger.warning(
            "%d completions have no verdict of their own in the runs and were left out; pass a "
            "verifier to check them against the gold answers",
            unverified,
        )
    return candidates + tactics


def _one_format(candidates: Sequence[Candidate]) -> None:
    kinds = {isinstance(c.prompt, str) for c in candidates}
    if len(kinds) > 1:
        raise DatasetError(
            "the runs mix chat requests and raw-text prompts; TRL trains on one format at a time"
        )


def _as_answer(prompt: list[Message] | str, text: str) -> list[Message] | str:
    return text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]


def _grouped(candidates: Sequence[Candidate]) -> Iterator[list[Candidate]]:
    """Candidates of one problem and one prompt, in first-seen order."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in candidates:
        groups.setdefault((c.problem.id, c.prompt_key), []).append(c)
    yield from groups.values()


def _distinct(candidates: Sequence[Candidate], status: str, require_stop: bool) -> list[Candidate]:
    seen: set[str] = set()
    kept = []
    for c in candidates:
        key = c.text.strip()
        if c.status != status or not key or key in seen:
            continue
        if require_stop and c.finish_reason != "stop":
            continue
        seen.add(key)
        kept.append(c)
    return kept


def sft_records_from_runs(
    run_folders: Sequence[str | Path],
    *,
    verifier: Verifier | None = None,
    max_per_problem: int | None = None,
    require_stop: bool = True,
) -> list[Record]:
    """Correct completions, deduplicated per problem and prompt; the prompt is the chat the
    model was sent (so a refine step's feedback stays in its prompt)."""
    candidates = run_candidates(run_folders, verifier)
    _one_format(candidates)
    records: list[Record] = []
    for group in _grouped(candidates):
        correct = _distinct(group, "correct", require_stop)[:max_per_problem]
        for c in correct:
            records.append(
                {
                    "id": c.problem.id,
                    "question": c.problem.question,
                    "prompt": c.prompt,
                    "completion": _as_answer(c.prompt, c.text),
                    "answer": c.problem.answer,
                }
            )
    return records


def dpo_pairs_from_runs(
    run_folders: Sequence[str | Path],
    *,
    verifier: Verifier | None = None,
    max_per_problem: int | None = None,
    require_stop: bool = True,
    seed: int = 0,
    references: Mapping[str, str] | None = None,
) -> list[Record]:
    """(correct, incorrect) completions of the same prompt. With more pairs than
    `max_per_problem`, a seeded draw from all of them, so two runs build the same set.

    `references` (question text -> a worked solution) stands in as the chosen answer of a
    problem none of whose samples is correct: a weak policy then still gets pairs, with an
    off-policy chosen side (its rejected side stays its own verified-wrong samples). It is
    matched on the normalised question, not the problem id: ids are row positions, and row 5
    of the reference split is not row 5 of the split that was sampled."""
    candidates = run_candidates(run_folders, verifier)
    _one_format(candidates)
    solutions = {question_hash(q): text for q, text in (references or {}).items()}
    records: list[Record] = []
    for group in _grouped(candidates):
        correct = _distinct(group, "correct", require_stop)
        wrong = _distinct(group, "incorrect", require_stop)
        reference = solutions.get(question_hash(group[0].problem.question))
        if not correct and wrong and reference:
            c0 = group[0]
            correct = [Candidate(c0.problem, c0.prompt, reference, "stop", "correct")]
        pairs = [(c, w) for c in correct for w in wrong]
        if max_per_problem is not None and len(pairs) > max_per_problem:
            rng = random.Random(f"{seed}:{group[0].problem.id}:{group[0].prompt_key}")
            pairs = rng.sample(pairs, max_per_problem)
        for c, w in pairs:
            records.append(
                {
                    "id": c.problem.id,
                    "question": c.problem.question,
                    "prompt": c.prompt,
                    "chosen": _as_answer(c.prompt, c.text),
                    "rejected": _as_answer(c.prompt, w.text),
                    "answer": c.problem.answer,
                }
            )
    return records


# --- data manifests (worked solutions as correct completions) --------------------------------

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"\n?####\s*(.+?)\s*$", re.DOTALL)


def gsm8k_completion(solution: str) -> str:
    """A GSM8K solution in the form the math prompts ask for: the calculator annotations
    (`<<48/2=24>>`) dropped and the `#### 72` line written as `The answer is \\boxed{72}.`"""
    text = _CALCULATOR.sub("", solution).strip()
    match = _FINAL.search(text)
    if match is None:
        raise ValueError("no '#### <answer>' line in the solution")
    answer = match.group(1).replace(",", "").strip()
    return f"{text[: match.start()].rstrip()}\nThe answer is \\boxed{{{answer}}}."


def sft_records_from_dataset(
    name: str,
    split: str = "train",
    *,
    solution_field: str = "answer",
    prompt: str = "math_cot",
    data_dir: str | None = None,
    limit: int | None = None,
) -> list[Record]:
    """A dataset's worked solutions as correct completions of its questions, rendered with
    `prompt` exactly as an eval run renders them."""
    manifest = load_manifest(name)
    template = load_prompt(prompt)
    problems = load_dataset(manifest, split, data_dir).problems
    raw = manifest.model_copy(
        update={
            "fields": manifest.fields.model_copy(update={"answer": solution_field}),
            "answer_format": "plain",
        }
    )
    solutions = load_dataset(raw, split, data_dir).problems
    if limit is not None:
        problems, solutions = problems[:limit], solutions[:limit]
    records = []
    for problem, solution in zip(problems, solutions, strict=True):
        text = solution.answer or ""
        if manifest.answer_format == "gsm8k" and solution_field == manifest.fields.answer:
            text = gsm8k_completion(text)
        records.append(
            {
                "id": problem.id,
                "question": problem.question,
                "prompt": [
                    {"role": m.role, "content": m.content} for m in template.render(problem)
                ],
                "completion": [{"role": "assistant", "content": text}],
                "answer": problem.answer,
            }
        )
    return records


# --- files -----------------------------------------------------------------------------------


def load_records(path: str | Path) -> list[Record]:
    """Rows of a JSON, JSONL or parquet file, read by HF datasets (any file it reads)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"records file {path} does not exist")
    kinds = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise DatasetError(f"{path}: expected a .json, .jsonl or .parquet file")
    try:
        import datasets

        rows = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many types for a bad file
        raise DatasetError(
            f"{path}: cannot be read as {kind}: {type(exc).__name__}: {exc}"
        ) from None
    return [dict(row) for row in rows]


def check_records(records: Sequence[Record], kind: str, source: str) -> None:
    """Every record has one of the column sets `kind` reads; the first that does not is named."""
    if not records:
        raise DatasetError(f"{source}: no training records")
    accepted = STAGE_COLUMNS[kind]
    for index, record in enumerate(records):
        if not any(all(record.get(c) is not None for c in cols) for cols in accepted):
            wanted = " or ".join("+".join(cols) for cols in accepted)
            raise DatasetError(
                f"{source}: record {index} has columns {sorted(record)}; {kind} needs {wanted}"
            )


def build_records(
    stage: str,
    run_folders: Sequence[str | Path],
    *,
    max_per_problem: int | None = None,
    seed: int = 0,
    verifier: Verifier | None = None,
    require_stop: bool = True,
) -> list[Record]:
    """A stage's records from run folders: preference pairs for `dpo`, correct completions
    otherwise (what a loop round calls between sampling and training)."""
    if stage == "dpo":
        return dpo_pairs_from_runs(
            run_folders,
            verifier=verifier,
            max_per_problem=max_per_problem,
            require_stop=require_stop,
            seed=seed,
        )
    return sft_records_from_runs(
        run_folders, verifier=verifier, max_per_problem=max_per_problem, require_stop=require_stop
    )


def records_from_settings(kind: str, settings: DataSettings) -> list[Record]:
    """The records a config's `data:` section names, checked for the columns `kind` (a stage,
    or zo-loss / zo-reward) reads."""
    stage = kind.split("-")[0]
    if settings.runs:
        source = ", ".join(settings.runs)
        if stage == "dpo":
            references = None
            if settings.reference_dataset is not None:
                solutions = sft_records_from_dataset(
                    settings.reference_dataset,
                    settings.split,
                    solution_field=settings.solution_field,
                    prompt=settings.prompt,
                    data_dir=settings.data_dir,
                )
                references = {r["question"]: r["completion"][0]["content"] for r in solutions}
            records = dpo_pairs_from_runs(
                settings.runs,
                max_per_problem=settings.max_per_problem,
                require_stop=settings.require_stop,
                seed=settings.seed,
                references=references,
            )
        else:
            records = sft_records_from_runs(
                settings.runs,
                max_per_problem=settings.max_per_problem,
                require_stop=settings.require_stop,
            )
    elif settings.file:
        source = settings.file
        records = load_records(settings.file)
    else:
        assert settings.dataset is not None
        source = f"dataset {settings.dataset}[{settings.split}]"
        if stage == "dpo":
            raise ConfigError(
                "a DPO stage needs preference pairs: data.runs (correct vs incorrect samples) or "
                "data.file (prompt/chosen/rejected), not data.dataset"
            )
        records = sft_records_from_dataset(
            settings.dataset,
            settings.split,
            solution_field=settings.solution_field,
            prompt=settings.prompt,
            data_dir=settings.data_dir,
        )
    records = slice_by_problem(records, settings.skip, settings.limit)
    check_records(records, kind, source)
    return records


def record_question(record: Record) -> str:
    """The question a record answers: its `question` column, or for records from elsewhere
    (a file without one) the prompt's last user turn, or the raw prompt or text."""
    question = record.get("question")
    if isinstance(question, str) and question.strip():
        return question
    chat = record.get("prompt", record.get("messages"))
    if isinstance(chat, list):
        users = [
            m.get("content", "") for m in chat if isinstance(m, dict) and m.get("role") == "user"
        ]
        if users:
            return str(users[-1])
    return str(chat if chat is not None else record.get("text", ""))


def slice_by_problem(records: Sequence[Record], skip: int, limit: int | None) -> list[Record]:
    """The records of problems `skip` to `skip + limit` in first-seen order: a slice cut
    between problems, so a problem's other pairs or solutions never land on the far side of a
    held-out split (cutting by record position would split a problem's DPO pairs)."""
    index: dict[str, int] = {}
    kept = []
    for record in records:
        position = index.setdefault(question_hash(record_question(record)), len(index))
        if position >= skip and (limit is None or position < skip + limit):
            kept.append(record)
    return kept


def write_training_questions(folder: str | Path, records: Sequence[Record]) -> Path:
    """Record the digests of the questions trained on in the training run folder (its
    adapter folder gets a copy), so an eval of the adapter can tell a held-out benchmark
    from one it was trained on."""
    return write_question_hashes(folder, (record_question(r) for r in records))


def check_heldout(records: Sequence[Record], eval_records: Sequence[Record] | None) -> None:
    """Refuse eval records that share a question with the training records."""
    if eval_records is not None:
        require_disjoint(
            (record_question(r) for r in records),
            (record_question(r) for r in eval_records),
            "the training data (data)",
            "the eval data (eval_data)",
        )


@dataclass(frozen=True)
class StageRecords:
    """What a training stage trains and evaluates on."""

    train: list[Record]
    eval: list[Record] | None
    #: the `data:` section the train records came from, for the manifest; None: handed in
    source: dict[str, Any] | None


def stage_records(
    kind: str,
    data: DataSettings,
    eval_data: DataSettings | None,
    records: Sequence[Record] | None = None,
    eval_records: Sequence[Record] | None = None,
) -> StageRecords:
    """A stage's records: those handed in, else those `data` / `eval_data` name, checked for
    the columns `kind` reads. Eval records that share a question with the train records are
    refused here, before the run folder exists, so a corrected config can use the same --out."""
    source = None if records is not None else data.model_dump(mode="json")
    train = list(records) if records is not None else records_from_settings(kind, data)
    check_records(train, kind, "records")
    if eval_records is None and eval_data is not None:
        eval_records = records_from_settings(kind, eval_data)
    if eval_records is not None:
        check_records(eval_records, kind, "eval records")
    check_heldout(train, eval_records)
    return StageRecords(train, None if eval_records is None else list(eval_records), source)


def records_sha256(records: Sequence[Record]) -> str:
    """One digest over the records as trained on, for the manifest."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()
