"""Verified traces as supervised fine-tuning records: `{"messages": [...], "completion": "..."}`.

What counts as verified is what the run's verifier accepted, so the export needs no gold of its
own: a translation or z3 program whose solver answer the verifier scored correct (fol-prover,
z3-program), a proof Lean accepted (lean-whole-proof), a chain-of-thought whose answer matched
(greedy, self-consistency: rejection sampling), and for best-first search each tactic on the
accepted proof path, paired with the prompt of the state it was proposed for.

A repaired program is exported under the *first* prompt by default, so the model learns to
write the right program at once; `with_repair_context=True` keeps the repair chat (the failed
attempt and the error) as the prompt instead. Duplicates (same prompt, same completion) are
dropped. Rows are results-rows dicts (`Trace.to_dict()`, one line of a run's results.jsonl) or
Traces. Run folders are exported by `reasoner.training.data` (what `reasoner train` and the
loops read), which takes its tactic records from `proof_path` here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reasoner.types import Trace

SFTRecord = dict[str, Any]


def _messages(step: dict[str, Any]) -> list[dict[str, str]] | None:
    messages = step["request"].get("messages")
    if not messages:
        return None
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def proof_path(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes from the root to the accepted proof, for a best-first row."""
    tree = row.get("tree") or []
    proved = [n for n in tree if n.get("status") == "proved"]
    if row["verdict"]["status"] != "correct" or not proved:
        return []
    node: dict[str, Any] | None = proved[0]
    path = []
    while node is not None and node.get("parent") is not None:
        path.append(node)
        node = tree[node["parent"]]
    return path[::-1]


def is_tactic_tree(row: dict[str, Any]) -> bool:
    return any("tactic" in node for node in row.get("tree") or [])


def sft_records(
    rows: Iterable[dict[str, Any] | Trace], *, with_repair_context: bool = False
) -> list[SFTRecord]:
    records: list[SFTRecord] = []
    seen: set[str] = set()

    def add(messages: list[dict[str, str]] | None, completion: str) -> None:
        if messages is None or not completion.strip():
            return
        key = json.dumps([messages, completion], ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            records.append({"messages": messages, "completion": completion})

    for item in rows:
        row = item.to_dict() if isinstance(item, Trace) else item
        steps = row.get("steps") or []
        if not steps:
            continue
        if is_tactic_tree(row):
            for node in proof_path(row):
                step = steps[node["step"]]
                add(_messages(step), node["tactic"])
            continue
        first = _messages(steps[0])
        for step in steps:
            prompt = _messages(step) if with_repair_context else first
            for completion, verdict in zip(step["completions"], step["verdicts"], strict=False):
                if verdict["status"] == "correct":
                    add(prompt, completion["text"])
    return records


def write_jsonl(records: Iterable[SFTRecord], path: str | Path) -> int:
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
