"""`reasoner show RUN --problem ID`: one problem's search tree, as indented text and as a small
static HTML page (nested <details>, no scripts), with each node's text, score and visits.

The run folder is only read, never repaired: a run that is still writing may end in a torn
line, which is skipped here rather than cut off the file as a resume would.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Any

from reasoner.errors import ReasonerError
from reasoner.runs import read_results


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "show",
        help="print one problem's search tree and write an HTML view of it",
        description="Prints the tree of a search strategy's Trace (beam search, DVTS, MCTS, "
        "tree-of-thought) with each node's text, score and visits, and writes a static HTML page.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder (holding results.jsonl)")
    p.add_argument("--problem", required=True, metavar="ID", help="the problem's id")
    p.add_argument("--html", metavar="FILE", help="the HTML view (default RUN/trees/ID.html)")
    p.add_argument("--width", type=int, default=100, help="characters of each step's text shown")


def run(args: argparse.Namespace) -> int:
    folder = Path(args.run)
    row = find_row(folder, args.problem)
    print(format_tree(row, width=args.width))
    if row.get("tree"):
        out = Path(args.html) if args.html else folder / "trees" / f"{_safe(args.problem)}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(row), encoding="utf-8")
        print(f"wrote {out}")
    return 0


def find_row(folder: Path, problem_id: str) -> dict[str, Any]:
    rows = read_results(folder)
    for row in rows:
        if str(row["problem"]["id"]) == problem_id:
            return row
    ids = [str(row["problem"]["id"]) for row in rows]
    listed = ", ".join(ids[:20]) + (f" ... ({len(ids)} in all)" if len(ids) > 20 else "")
    raise ReasonerError(
        f"no problem {problem_id!r} in {folder / 'results.jsonl'}; its problems: {listed}"
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "problem"


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 3, 0)] + "..."


def chosen_path(tree: list[dict[str, Any]]) -> set[int]:
    """The ids from the root to the chosen node (empty when none is marked)."""
    by_id = {node["id"]: node for node in tree}
    chosen = next((node for node in tree if node.get("chosen")), None)
    path: set[int] = set()
    while chosen is not None:
        path.add(chosen["id"])
        chosen = by_id.get(chosen["parent"]) if chosen["parent"] is not None else None
    return path


def node_label(node: dict[str, Any]) -> str:
    """id, then score, visits and value where the strategy used them, then the outcome."""
    parts = [f"[{node['id']}]"]
    if node.get("score") is not None:
        parts.append(f"score={node['score']:.3f}")
    elif node.get("score_error"):
        parts.append("score=error")
    if node.get("visits"):
        parts.append(f"N={node['visits']} Q={node['value']:.3f}")
    if node.get("reward") is not None:
        parts.append(f"reward={node['reward']:.3f}")
    if node.get("terminal"):
        parts.append(
            "terminal"
            + (
                f"({node['finish_reason']})"
                if node.get("finish_reason") not in (None, "stop")
                else ""
            )
        )
    if node.get("status"):
        parts.append(f"{node['status']} answer={node.get('answer')}")
    if node.get("rollout_status"):
        parts.append(f"rollout {node['rollout_status']} answer={node.get('rollout_answer')}")
    if node.get("finish"):
        parts.append("completion")
    if node.get("chosen"):
        parts.append("<== CHOSEN")
    return " ".join(parts)


def _children(tree: list[dict[str, Any]]) -> dict[int | None, list[dict[str, Any]]]:
    children: dict[int | None, list[dict[str, Any]]] = {}
    for node in tree:
        children.setdefault(node["parent"], []).append(node)
    return children


def format_tree(row: dict[str, Any], width: int = 100) -> str:
    problem, verdict = row["problem"], row["verdict"]
    usage = row.get("usage", {})
    lines = [
        f"problem {problem['id']}: {_short(problem['question'], width)}",
        f"gold {problem.get('answer')!r}   prediction {row.get('prediction')!r}   "
        f"verdict {verdict['status']}",
        f"usage   {usage.get('prompt_tokens', 0)} prompt tokens "
        f"({usage.get('cached_prompt_tokens', 0)} cached), "
        f"{usage.get('completion_tokens', 0)} generated, {usage.get('engine_calls', 0)} engine "
        f"calls, {usage.get('verifier_calls', 0)} verifier calls, "
        f"{usage.get('wall_time_s', 0.0):.1f} s",
    ]
    tree = row.get("tree") or []
    if not tree:
        lines.append("no search tree: this strategy keeps none (see the run's samples instead)")
        return "\n".join(lines)
    on_path = chosen_path(tree)
    lines.append(f"tree    {len(tree)} nodes; * marks the chosen path")
    children = _children(tree)

    def walk(node: dict[str, Any], indent: str) -> None:
        mark = "*" if node["id"] in on_path else " "
        text = _short(node.get("text", ""), width) if node["parent"] is not None else "(root)"
        lines.append(f"{indent}{mark}{node_label(node)}  {text}")
        if node.get("rollout"):
            lines.append(f"{indent}   rollout: {_short(node['rollout'], width)}")
        for child in children.get(node["id"], []):
            walk(child, indent + "  ")

    for root in children.get(None, []):
        walk(root, "")
    return "\n".join(lines)


STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 70em; }
details { margin-left: 1.2em; border-left: 1px solid #ccc; padding-left: 0.5em; }
summary { cursor: pointer; font-family: monospace; }
pre { white-space: pre-wrap; background: #f6f6f6; margin: 0.2em 0 0.4em; padding: 0.3em; }
.path > summary { font-weight: bold; color: #064; }
.correct { color: #064; } .incorrect { color: #a00; } .error { color: #a60; }
.rollout { color: #555; }
"""


def render_html(row: dict[str, Any]) -> str:
    """A page that opens the chosen path and folds the rest."""
    problem, verdict = row["problem"], row["verdict"]
    tree = row.get("tree") or []
    on_path = chosen_path(tree)
    children = _children(tree)
    esc = html.escape

    def node_html(node: dict[str, Any]) -> str:
        classes = ["path"] if node["id"] in on_path else []
        opened = " open" if node["id"] in on_path or node["parent"] is None else ""
        status = node.get("status")
        badge = f' <span class="{esc(status)}">{esc(status)}</span>' if status else ""
        body = f"<pre>{esc(node.get('text', ''))}</pre>" if node["parent"] is not None else ""
        if node.get("rollout"):
            body += f'<pre class="rollout">rollout: {esc(node["rollout"])}</pre>'
        inner = "".join(node_html(child) for child in children.get(node["id"], []))
        return (
            f'<details class="{" ".join(classes)}"{opened}><summary>{esc(node_label(node))}'
            f"{badge}</summary>{body}{inner}</details>"
        )

    usage = esc(json.dumps(row.get("usage", {})))
    roots = "".join(node_html(root) for root in children.get(None, []))
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>search tree of problem {esc(str(problem['id']))}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Problem {esc(str(problem['id']))}</h1><pre>{esc(problem['question'])}</pre>"
        f"<p>gold <b>{esc(str(problem.get('answer')))}</b>, prediction "
        f"<b>{esc(str(row.get('prediction')))}</b>, verdict "
        f'<span class="{esc(verdict["status"])}">{esc(verdict["status"])}</span></p>'
        f"<p>usage: <code>{usage}</code></p>"
        f"<p>{len(tree)} nodes; the chosen path is open and in bold.</p>{roots}"
        "</body></html>\n"
    )
