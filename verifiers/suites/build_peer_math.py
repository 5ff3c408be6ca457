"""Rebuilds peer-math.jsonl from other graders' published test files (run by hand, not at test
time; it needs local git mirrors of the source repositories).

Cases are read as data: the literal tuples of each `@pytest.mark.parametrize` list, parsed with
`ast.literal_eval`. Cases whose published verdict depends on a non-default grader setting
(`strict=False`, `allow_set_relation_comp=True`, a float precision other than 6, a string-only
extraction) are left out, since reasoner grades with one fixed setting.

    python verifiers/suites/build_peer_math.py MATH_VERIFY_GIT NEMO_SKILLS_GIT > peer-math.jsonl
"""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

MATH_VERIFY = "huggingface/Math-Verify"
NEMO_SKILLS = "NVIDIA/NeMo-Skills"
MATH_VERIFY_FILES = [
    "tests/test_all.py",
    "tests/test_boxed.py",
    "tests/test_numina_cases.py",
    "tests/test_open_thoughts.py",
    "tests/test_yujianll.py",
    "tests/test_strict.py",
]
NEMO_FILES = ["tests/test_math_equal.py"]


def git(git_dir: str, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir, *args], capture_output=True, text=True, check=True
    ).stdout


def last_commit(git_dir: str, path: str) -> str:
    return git(git_dir, "log", "-1", "--format=%H", "HEAD", "--", path).strip()


def parametrized(source: str) -> Iterator[tuple[ast.FunctionDef, list[str], list[Any]]]:
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("parametrize"):
                names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
                values = [constant(elt) for elt in dec.args[1].elts]  # type: ignore[attr-defined]
                yield node, names, values


def constant(node: ast.expr) -> Any:
    """A literal, or a constant expression such as `5 / 2` or an f-string over `math`."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        code = compile(ast.Expression(node), "<case>", "eval")
        return eval(code, {"__builtins__": {}, "math": math})  # constant expressions only


def call_setting(func: ast.FunctionDef, keyword: str) -> Any:
    """A keyword of the grading call in the test body: a literal, or the parameter it names."""
    for node in ast.walk(func):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == keyword:
                    try:
                        return ast.literal_eval(kw.value)
                    except ValueError:
                        return ("param", ast.unparse(kw.value))
    return None


def unwrap(gold: str) -> str:
    """`$9$` -> `9`: reasoner's golds are bare answers (as in MATH); anything else stays as is."""
    m = re.fullmatch(r"\$([^$]*)\$", gold.strip())
    return m.group(1).strip() if m else gold


def math_verify_cases(git_dir: str) -> Iterator[dict[str, Any]]:
    for path in MATH_VERIFY_FILES:
        commit = last_commit(git_dir, path)
        source = git(git_dir, "show", f"HEAD:{path}")
        for func, names, values in parametrized(source):
            match_types = call_setting(func, "match_types") or ["latex", "expr"]
            for index, value in enumerate(values):
                row = dict(zip(names, value, strict=True))
                setting = {k: call_setting(func, k) for k in ("precision", "strict")}
                setting["allow_set_relation_comp"] = call_setting(func, "allow_set_relation_comp")
                for key, val in list(setting.items()):
                    if isinstance(val, tuple):  # the setting is one of the parameters
                        setting[key] = row[val[1]]
                if setting["precision"] not in (None, 6) or setting["strict"] is False:
                    continue
                if setting["allow_set_relation_comp"]:
                    continue
                expected = row.get("expected", row.get("result"))
                yield {
                    "id": f"mv-{path.split('/')[-1][5:-3]}-{func.name[5:]}-{index:03d}",
                    "gold": unwrap(str(row["gold"])),
                    "completion": str(row["pred"]),
                    "expected": "correct" if int(expected) else "incorrect",
                    "source_repo": MATH_VERIFY,
                    "source_path": path,
                    "source_commit": commit,
                    "source_test": func.name,
                    "source_match_types": match_types,
                }


def as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def nemo_cases(git_dir: str) -> Iterator[dict[str, Any]]:
    for path in NEMO_FILES:
        commit = last_commit(git_dir, path)
        source = git(git_dir, "show", f"HEAD:{path}")
        for func, _names, values in parametrized(source):
            expected = "correct" if func.name == "test_correct_examples" else "incorrect"
            for index, (a, b) in enumerate(values):
                # math_equal is asserted both ways round: each direction is a published case
                for direction, (gold, answer) in enumerate(((a, b), (b, a))):
                    gold_text, answer_text = as_text(gold), as_text(answer)
                    if gold_text is None:
                        continue  # no gold: not a grading case
                    if direction and as_text(a) == as_text(b):
                        continue
                    yield {
                        "id": f"nemo-{func.name[5:]}-{index:03d}-{'ab'[direction]}",
                        "gold": gold_text,
                        "completion": answer_text or "",
                        "expected": expected,
                        "source_repo": NEMO_SKILLS,
                        "source_path": path,
                        "source_commit": commit,
                        "source_test": func.name,
                    }


def main() -> None:
    for case in [*math_verify_cases(sys.argv[1]), *nemo_cases(sys.argv[2])]:
        print(json.dumps(case, ensure_ascii=False))


if __name__ == "__main__":
    main()
