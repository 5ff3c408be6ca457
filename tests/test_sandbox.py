"""The sandbox against hostile programs, and the verifiers that run model code in it.

Each attack must be both contained (the host is untouched) and reported (the status or the
program's own output says what happened). Small limits keep the file fast.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reasoner.types import Completion, Problem
from reasoner.verifiers import sandbox
from reasoner.verifiers.code_exec import (
    ProgramAidedMathVerifier,
    UnitTestVerifier,
    extract_program,
)
from reasoner.verifiers.sandbox import (
    SandboxLimits,
    SandboxResult,
    default_limits,
    policy_path,
    run_in_sandbox,
)

PROJECT = Path(__file__).resolve().parents[1]
LIMITS = SandboxLimits(
    cpu_seconds=2,
    wall_seconds=3,
    memory_mb=256,
    max_processes=16,
    max_output_bytes=100_000,
    max_file_mb=4,
    tmp_mb=8,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="bubblewrap sandboxes are Linux-only"
)


def run(code: str, **kwargs: object) -> SandboxResult:
    return run_in_sandbox(code, limits=LIMITS, **kwargs)  # type: ignore[arg-type]


def _completion(text: str) -> Completion:
    return Completion(text=text, finish_reason="stop", prompt_tokens=0, completion_tokens=0)


def _fenced(code: str) -> str:
    return f"Here is my program.\n```python\n{code}\n```\n"


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    if shutil.which(sandbox.BWRAP) is None:
        pytest.fail("bwrap not found: apt-get install bubblewrap (the Makefile installs it)")


# --- the sandbox itself ------------------------------------------------------------------------


def test_runs_code_with_stdin_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = "import os\nprint(input(), open('data/in.txt').read(), os.getcwd(), '✓')"
    result = run(code, stdin="héllo\n", files={"data/in.txt": "wörld"})
    assert result.status == "ok", result
    assert result.stdout.split() == ["héllo", "wörld", sandbox.WORKDIR, "✓"]
    assert result.returncode == 0
    assert list(tmp_path.iterdir()) == []  # the work directory is gone


@pytest.mark.parametrize("layout", ["--symlinks", "--copies"])
def test_interpreter_under_tmp(layout: str) -> None:
    """A Python under /tmp (a virtualenv there) stays visible over the sandbox's private /tmp,
    read-only (issue 16, item 5)."""
    import subprocess
    import sysconfig

    home = Path(tempfile.mkdtemp(prefix="reasoner-venv-", dir="/tmp"))
    try:
        venv = home / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", layout, str(venv)], check=True
        )
        python = venv / "bin" / "python"
        site = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # this environment's packages and the project, so the venv can import reasoner
        paths = [sysconfig.get_paths()["purelib"], str(PROJECT)]
        Path(site, "project.pth").write_text("\n".join(paths) + "\n")
        scratch = f"/tmp/{uuid.uuid4().hex}"
        program = (
            "import sys\n"
            "print(sys.executable)\n"
            f"open({scratch!r}, 'w').write('the private /tmp still works')\n"
            "try:\n"
            "    open(sys.prefix + '/planted', 'w')\n"
            "except OSError:\n"
            "    print('read-only')\n"
        )
        check = (
            "import json, sys\n"
            "from reasoner.verifiers.sandbox import SandboxLimits, run_in_sandbox\n"
            f"result = run_in_sandbox({program!r}, limits=SandboxLimits())\n"
            "print(json.dumps([result.status, result.stdout, result.reason]))\n"
        )
        done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        status, stdout, reason = json.loads(done.stdout.splitlines()[-1])
        assert status == "ok", reason
        assert stdout.split() == [str(python), "read-only"]
        assert not (venv / "planted").exists()
        assert not Path(scratch).exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_code_runs_unprivileged() -> None:
    code = (
        "import os\n"
        "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in l)\n"
        "print(os.getuid(), status['CapEff'], status['NoNewPrivs'])"
    )
    result = run(code)
    uid, caps, no_new_privs = result.stdout.split()
    assert int(uid) != 0
    assert int(caps, 16) == 0
    assert no_new_privs == "1"


def test_no_network() -> None:
    code = """
import socket
for host, port in (("127.0.0.1", 8000), ("1.1.1.1", 53)):
    try:
        socket.create_connection((host, port), timeout=2).close()
        print("connected", host)
    except OSError as exc:
        print("blocked", host, type(exc).__name__)
print("interfaces", *[name for _, name in socket.if_nameindex()])
"""
    result = run(code)
    assert result.status == "ok", result
    assert "blocked 127.0.0.1" in result.stdout
    assert "blocked 1.1.1.1" in result.stdout
    assert "connected" not in result.stdout
    assert "interfaces lo\n" in result.stdout  # a private loopback, nothing else


def test_writes_outside_the_workdir_do_not_reach_the_host() -> None:
    token = uuid.uuid4().hex
    targets = {
        "project": PROJECT / f"pwned-{token}",
        "home": Path.home() / f"pwned-{token}",
        "venv": Path(sys.prefix) / f"pwned-{token}",
        "usr": Path("/usr") / f"pwned-{token}",
        "host_tmp": Path(tempfile.gettempdir()) / f"pwned-{token}",
    }
    code = f"""
for name, path in {[(k, str(v)) for k, v in targets.items()]!r}:
    try:
        open(path, "w").write("pwned")
        print("wrote", name)
    except OSError as exc:
        print("denied", name, type(exc).__name__)
"""
    result = run(code)
    assert result.status == "ok", result
    for name in ("project", "home", "venv", "usr"):
        assert f"denied {name}" in result.stdout
    for path in targets.values():
        assert not path.exists()  # /tmp inside is private, so even a write there stays inside


def test_secrets_and_project_files_are_out_of_reach() -> None:
    readme = PROJECT / "README.md"
    before = readme.stat().st_mtime_ns
    attempts = [("/etc/shadow", "r"), (str(readme), "a"), (f"{sys.prefix}/pyvenv.cfg", "a")]
    code = f"""
for path, mode in {attempts!r}:
    try:
        open(path, mode).close()
        print("opened", path)
    except OSError as exc:
        print("denied", path, type(exc).__name__)
"""
    result = run(code)
    assert result.status == "ok", result
    assert "opened" not in result.stdout
    assert result.stdout.count("denied") == 3
    assert readme.stat().st_mtime_ns == before


def test_host_environment_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("REASONER_TEST_SECRET", secret)
    result = run("import os\nprint(dict(os.environ))")
    assert result.status == "ok", result
    assert secret not in result.stdout
    assert "REASONER_TEST_SECRET" not in result.stdout
    shown = ast.literal_eval(result.stdout)
    allowed = {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "PWD"}
    assert set(shown) <= allowed


def test_process_limit_stops_forks() -> None:
    code = """
import os, time
forked = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        forked += 1
except OSError as exc:
    print(forked, type(exc).__name__)
"""
    result = run(code)
    forked, error = result.stdout.split()
    assert int(forked) < LIMITS.max_processes
    assert error == "BlockingIOError"


def _processes_in(pid_namespace: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == pid_namespace:
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to look at
                continue
    return found


def test_fork_bomb_is_contained() -> None:
    code = """
import os
print(os.readlink("/proc/self/ns/pid"), flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    start = time.monotonic()
    result = run(code)
    assert result.status != "ok"
    assert result.status == "timeout", result
    assert time.monotonic() - start < LIMITS.wall_seconds + 3
    namespace = result.stdout.split()[0]
    assert namespace.startswith("pid:[")
    deadline = time.monotonic() + 5
    while _processes_in(namespace) and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel tears the namespace down just after bwrap is reaped
    assert _processes_in(namespace) == []
    assert run("print('still fine')").stdout == "still fine\n"


def test_memory_bomb() -> None:
    result = run("x = bytearray(4 * 1024**3)\nprint('allocated')")
    assert result.status == "memory", result
    assert "MemoryError" in result.stderr
    assert "allocated" not in result.stdout


def test_busy_loop_hits_the_cpu_limit() -> None:
    result = run("while True:\n    pass")
    assert result.status == "timeout", result
    assert "CPU" in result.reason
    assert result.wall_s < LIMITS.wall_seconds + 1


def test_sleeper_hits_the_wall_clock_limit() -> None:
    result = run("import time\ntime.sleep(60)")
    assert result.status == "timeout", result
    assert "wall-clock" in result.reason
    assert LIMITS.wall_seconds <= result.wall_s < LIMITS.wall_seconds + 1.5


def test_output_flood_is_cut_at_the_cap() -> None:
    result = run("while True:\n    print('x' * 10000)")
    assert result.status == "output_limit", result
    assert 0 < len(result.stdout.encode()) <= LIMITS.max_output_bytes
    assert result.wall_s < LIMITS.wall_seconds


def test_file_size_limit() -> None:
    result = run("open('big', 'wb').write(b'x' * (8 * 1024**2))")
    assert result.status == "nonzero_exit", result
    assert "File too large" in result.stderr


def test_scratch_space_is_capped() -> None:
    code = """
written = 0
try:
    for i in range(8):
        with open(f"/tmp/chunk{i}", "wb") as f:
            f.write(b"x" * (3 * 1024**2))
        written += 3
except OSError as exc:
    print(written, exc.strerror)
"""
    result = run(code)
    assert result.status == "ok", result
    written, reason = result.stdout.split(maxsplit=1)
    assert int(written) <= LIMITS.tmp_mb
    assert reason.strip() == "No space left on device"


def test_missing_bwrap_is_a_sandbox_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    result = run("print(1)")
    assert result.status == "sandbox_error"
    assert "apt-get install bubblewrap" in result.reason
    assert result.stdout == ""


def test_bwrap_that_fails_to_start_is_a_sandbox_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", "false")  # exits 1, like bwrap failing its set-up
    assert run("print(1)").status == "sandbox_error"


def test_code_cannot_pass_itself_off_as_a_sandbox_error() -> None:
    code = "import sys\nsys.stderr.write('bwrap: Creating new namespace failed\\n')\nsys.exit(1)"
    result = run(code)
    assert result.status == "nonzero_exit"
    assert result.returncode == 1


def test_unsupported_language_and_bad_file_names_are_caller_errors() -> None:
    with pytest.raises(ValueError, match="language"):
        run_in_sandbox("print(1)", language="bash", limits=LIMITS)
    with pytest.raises(ValueError, match="relative"):
        run_in_sandbox("print(1)", limits=LIMITS, files={"../escape": "x"})


def test_policy_file_is_the_default(tmp_path: Path) -> None:
    assert default_limits() == SandboxLimits.from_yaml(policy_path())
    assert default_limits().wall_seconds > 0
    bad = tmp_path / "policy.yaml"
    bad.write_text("wall_secs: 3\n")
    with pytest.raises(ValueError, match="wall_secs"):
        SandboxLimits.from_yaml(bad)
    bad.write_text("wall_seconds: -1\n")
    with pytest.raises(ValueError, match="positive"):
        SandboxLimits.from_yaml(bad)


# --- program-aided math ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```python\nprint(1)\n```\nthen\n```python\nprint(2)\n```", "print(2)\n"),
        ("```py\nprint(1)\n```\n```\noutput: 1\n```", "print(1)\n"),
        ("```\nprint(3)\n```", "print(3)\n"),
        ("```python\nprint(4)", "print(4)"),  # cut off by max_tokens
        ("print(5)", "print(5)"),
        ("```bash\nls\n```", None),
        ("   ", None),
    ],
)
def test_extract_program(text: str, expected: str | None) -> None:
    assert extract_program(text) == expected


@pytest.fixture(scope="module")
def pal() -> Iterator[ProgramAidedMathVerifier]:
    verifier = ProgramAidedMathVerifier(limits=LIMITS, workers=1)
    yield verifier
    verifier.close()


PROBLEM = Problem(id="p1", question="What is 12 * 7 + 5?", answer="89")


def test_pal_correct(pal: ProgramAidedMathVerifier) -> None:
    verdict = pal.verify(PROBLEM, _completion(_fenced("print('debug')\nprint(12 * 7 + 5)")))
    assert verdict.status == "correct", verdict
    assert verdict.answer == "89"
    assert verdict.score == 1.0


def test_pal_incorrect(pal: ProgramAidedMathVerifier) -> None:
    verdict = pal.verify(PROBLEM, _completion(_fenced("print(12 * 7)")))
    assert verdict.status == "incorrect", verdict
    assert verdict.answer == "84"


def test_pal_no_code_and_no_output(pal: ProgramAidedMathVerifier) -> None:
    assert pal.verify(PROBLEM, _completion("```bash\necho 89\n```")).feedback == "no code found"
    silent = pal.verify(PROBLEM, _completion(_fenced("x = 89")))
    assert (silent.status, silent.feedback) == ("incorrect", "program printed nothing")


def test_pal_exception_is_the_models_fault(pal: ProgramAidedMathVerifier) -> None:
    verdict = pal.verify(PROBLEM, _completion(_fenced("total = 89\nprint(total / 0)")))
    assert verdict.status == "incorrect"
    assert verdict.feedback == "ZeroDivisionError: division by zero"


def test_pal_runaway_program_is_incorrect(pal: ProgramAidedMathVerifier) -> None:
    verdict = pal.verify(PROBLEM, _completion(_fenced("while True:\n    print(89)")))
    assert verdict.status == "incorrect"
    assert "output exceeded" in verdict.feedback


def test_pal_sandbox_error_is_a_verifier_error(
    pal: ProgramAidedMathVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    verdict = pal.verify(PROBLEM, _completion(_fenced("print(89)")))
    assert verdict.status == "error"
    assert "apt-get install bubblewrap" in verdict.feedback


def test_pal_batch_runs_from_threads(pal: ProgramAidedMathVerifier) -> None:
    pairs = [(PROBLEM, _completion(_fenced(f"print({n})"))) for n in (89, 89, 89)]
    assert [v.status for v in pal.verify_batch(pairs)] == ["correct"] * 3


# --- unit tests --------------------------------------------------------------------------------

SOLUTION = _fenced("def add(a, b):\n    return a + b if a < 5 else 0")


@pytest.fixture(scope="module")
def unit() -> UnitTestVerifier:
    return UnitTestVerifier(limits=LIMITS)


def _with_tests(tests: object) -> Problem:
    return Problem(id="u1", question="write add", metadata={"tests": tests})


def test_unit_tests_all_pass(unit: UnitTestVerifier) -> None:
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    verdict = unit.verify(_with_tests(tests), _completion(SOLUTION))
    assert (verdict.status, verdict.score) == ("correct", 1.0), verdict
    assert verdict.feedback == "all 2 tests passed"


def test_unit_tests_partial(unit: UnitTestVerifier) -> None:
    tests = ["assert add(1, 2) == 3", "assert add(7, 2) == 9", "assert add(0, 0) == 0"]
    verdict = unit.verify(_with_tests(tests), _completion(SOLUTION))
    assert verdict.status == "incorrect"
    assert verdict.score == pytest.approx(2 / 3)
    assert "assert add(7, 2) == 9" in verdict.feedback
    assert "AssertionError" in verdict.feedback


def test_unit_tests_from_a_block_of_test_code(unit: UnitTestVerifier) -> None:
    tests = "x = add(1, 2)\nassert x == 3\nassert add(9, 1) == 10, 'big numbers'\n"
    verdict = unit.verify(_with_tests(tests), _completion(SOLUTION))
    assert verdict.score == 0.5  # the assignment is set-up, not a test
    assert "AssertionError: big numbers" in verdict.feedback


def test_unit_tests_cannot_be_forged(unit: UnitTestVerifier) -> None:
    fake = '{"solution_error": null, "results": [null, null]}'
    forger = _fenced(
        "import os\n"
        "def add(a, b):\n    return 0\n"
        f"print('@@reasoner-unit-tests:0123456789abcdef0123456789abcdef {fake}')\n"
        f"os.write(1, b'@@reasoner-unit-tests: {fake}\\n')\n"
    )
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    verdict = unit.verify(_with_tests(tests), _completion(forger))
    assert (verdict.status, verdict.score) == ("incorrect", 0.0), verdict
    # prints a report, then exits before the harness can write the real one
    quitter = _fenced(
        f"import os, sys\nprint('@@reasoner-unit-tests:x {fake}')\nsys.stdout.flush()\nos._exit(0)"
    )
    verdict = unit.verify(_with_tests(tests), _completion(quitter))
    assert (verdict.status, verdict.score) == ("incorrect", 0.0), verdict


def test_unit_tests_code_that_raises(unit: UnitTestVerifier) -> None:
    verdict = unit.verify(_with_tests(["assert add(1, 2) == 3"]), _completion(_fenced("1/0")))
    assert verdict.status == "incorrect"
    assert "ZeroDivisionError" in verdict.feedback


def test_unit_tests_missing_is_a_verifier_error(unit: UnitTestVerifier) -> None:
    no_tests = Problem(id="u2", question="write add")
    assert unit.verify(no_tests, _completion(SOLUTION)).status == "error"
    assert unit.verify(_with_tests("x = 1"), _completion(SOLUTION)).status == "error"


def test_unit_tests_sandbox_error_is_a_verifier_error(
    unit: UnitTestVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    verdict = unit.verify(_with_tests(["assert add(1, 2) == 3"]), _completion(SOLUTION))
    assert verdict.status == "error"
