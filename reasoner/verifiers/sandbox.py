"""Run untrusted model code inside a bubblewrap sandbox.

A verifier that executes what a model wrote must assume the code is hostile: it may read secrets,
reach the network, write over the project, fork or allocate until the host falls over, or print
forever. Each run gets fresh namespaces (no network but its own loopback, its own pid tree), a
read-only view of only what Python needs, a throwaway work directory, an empty environment, an
unprivileged uid, and rlimits; the wall clock and the output size are enforced from outside
(`reasoner.tools.process`).
Nothing here uses signals in the caller, so it works from any thread, and a missing or broken
`bwrap` is reported as `sandbox_error`: code never runs unsandboxed.

Two ways to the unprivileged uid, by who calls:

- as root, bwrap runs without a user namespace (a root-created one can only map the sandbox's uid
  to host uid 0, and the kernel exempts uid 0 from RLIMIT_NPROC, so a fork bomb would run free);
  a bootstrap inside drops to a fresh random host uid, which makes RLIMIT_NPROC count exactly
  this run's processes and leaves the code no file it owns outside the work directory.
- as anyone else, the usual unprivileged bwrap: `--unshare-all --uid 65534` in a new user
  namespace, where RLIMIT_NPROC counts per namespace.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from reasoner.tools import process

SandboxStatus = Literal[
    "ok", "nonzero_exit", "timeout", "memory", "output_limit", "killed", "sandbox_error"
]

# The executable to run; a module attribute so tests (and odd installs) can point elsewhere.
BWRAP = "bwrap"
WORKDIR = "/sandbox"  # the cwd inside; not /work or /tmp, which host paths may sit under
PROGRAM = "main.py"
_INSTALL_HINT = "install it with `apt-get install bubblewrap`"
_STARTED = b"started\n"
# Host uids for root-started runs: far above any real account or subordinate-uid range.
_UID_BASE, _UID_SPAN = 1_900_000_000, 100_000_000
_NOBODY = 65534
_PATH = "/usr/local/bin:/usr/bin:/bin"
# Enough of /etc for the dynamic loader and local time; no passwd, shadow, hosts or certs.
_ETC = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
)
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")

# Runs inside the sandbox as `python -I -S -c`, before any model code: sets the limits the code
# cannot raise, drops to the run's uid where bwrap left us root (and only then enters the work
# directory, which that uid owns and root without CAP_DAC_OVERRIDE may not), reports that it came
# up (through a pipe closed before the model's code starts, so it cannot fake or hide the
# report), then becomes the model's program.
_BOOTSTRAP = """\
import json, os, resource, sys
spec = json.loads(sys.argv[1])
for name, (soft, hard) in spec["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (soft, hard))
uid = spec["uid"]
if uid is not None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
os.chdir(spec["cwd"])
os.environ["PWD"] = spec["cwd"]
os.write(spec["status_fd"], b"started\\n")
os.close(spec["status_fd"])
os.execv(spec["argv"][0], spec["argv"])
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. The shipped defaults live in verifiers/sandbox/policy.yaml (documented
    there); these field defaults only fill keys that file leaves out."""

    cpu_seconds: float = 5
    wall_seconds: float = 10
    memory_mb: int = 512
    max_processes: int = 64
    max_output_bytes: int = 1_000_000
    max_file_mb: int = 16
    tmp_mb: int = 64

    @classmethod
    def from_yaml(cls, path: str | Path) -> SandboxLimits:
        import yaml

        from reasoner.errors import ConfigError

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of limit names to numbers")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown limit(s) {unknown}; known: {sorted(known)}")
        bad = sorted(k for k, v in data.items() if not _positive_number(v))
        if bad:
            raise ConfigError(f"{path}: limit(s) {bad} must be positive numbers")
        return cls(**data)


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def policy_path() -> Path:
    from reasoner.resources import asset_dir

    return asset_dir("verifiers") / "sandbox" / "policy.yaml"


@lru_cache(maxsize=1)
def default_limits() -> SandboxLimits:
    """The shipped policy, read once per process."""
    return SandboxLimits.from_yaml(policy_path())


@dataclass(frozen=True)
class SandboxResult:
    """How a run ended. stdout/stderr hold at most `max_output_bytes` each, decoded leniently."""

    status: SandboxStatus
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_in_sandbox(
    code: str,
    *,
    language: str = "python",
    stdin: str = "",
    limits: SandboxLimits | None = None,
    files: dict[str, str] | None = None,
) -> SandboxResult:
    """Runs `code` as `main.py` in a fresh sandbox, with `files` (relative path -> text) beside
    it and `stdin` on its standard input. Never raises for anything the code does."""
    if language != "python":
        raise ValueError(f"unsupported sandbox language {language!r}; only 'python' is")
    limits = limits or default_limits()
    extra = _checked_files(files or {})
    bwrap = shutil.which(BWRAP)
    if bwrap is None:
        return _sandbox_error(f"bubblewrap ({BWRAP!r}) not found: {_INSTALL_HINT}", 0.0)
    if not sys.executable:
        return _sandbox_error("no Python executable to run in the sandbox", 0.0)
    scratch = Path(tempfile.mkdtemp(prefix="reasoner-sandbox-"))
    try:
        return _run(bwrap, scratch, code, stdin, limits, extra)
    finally:
        _remove_tree(scratch)


def _checked_files(files: dict[str, str]) -> dict[str, str]:
    """Paths a caller passes must stay inside the work directory; that is a caller bug."""
    for name in files:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise ValueError(f"sandbox file {name!r} must be a relative path inside the workdir")
        if name == PROGRAM:
            raise ValueError(f"sandbox file name {PROGRAM!r} is reserved for the code")
    return files


def _run(
    bwrap: str,
    scratch: Path,
    code: str,
    stdin: str,
    limits: SandboxLimits,
    files: dict[str, str],
) -> SandboxResult:
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN) if os.geteuid() == 0 else None
    work = scratch / "work"
    _populate(work, {**files, PROGRAM: code}, uid)
    status_r, status_w = os.pipe()
    try:
        argv = _bwrap_argv(bwrap, work, limits, uid, status_w)
        try:
            # Killing bwrap's process group kills the sandbox's pid 1, and with it everything
            # in its pid namespace, whatever session the code moved to.
            run = process.run(
                argv,
                timeout_s=limits.wall_seconds,
                input=stdin,
                max_output_bytes=limits.max_output_bytes,
                env={},
                pass_fds=(status_w,),
            )
        except process.StartFailed as exc:
            return _sandbox_error(f"could not start bubblewrap: {exc}", 0.0)
        started = _read_status(status_r) == _STARTED
    finally:
        os.close(status_r)
        os.close(status_w)
    return _result(started, run, limits)


def _populate(work: Path, files: dict[str, str], uid: int | None) -> None:
    """Root-started runs own their work directory under their own uid, so the code can write
    there and nowhere else it can reach."""
    work.mkdir(mode=0o700)
    for name, text in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")  # what Python inside reads, whatever our locale
    if uid is not None:
        for path in [work, *work.rglob("*")]:
            os.chown(path, uid, uid)


def _bwrap_argv(
    bwrap: str, work: Path, limits: SandboxLimits, uid: int | None, status_fd: int
) -> list[str]:
    python = sys.executable
    spec = {
        "rlimits": _rlimits(limits),
        "uid": uid,
        "status_fd": status_fd,
        "cwd": WORKDIR,
        "argv": [python, PROGRAM],
    }
    return [
        bwrap,
        *_isolation_args(uid),
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--chdir",
        "/",  # not the caller's cwd, which bwrap would otherwise keep and name in $PWD
        *_filesystem_args(work, limits),
        "--clearenv",
        *_env_args(),
        "--",
        python,
        "-I",
        "-S",
        "-c",
        _BOOTSTRAP,
        json.dumps(spec),
    ]


def _isolation_args(uid: int | None) -> list[str]:
    if uid is None:
        # The user namespace maps the sandbox's uid to the caller's; no nested namespaces.
        return [
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(_NOBODY),
            "--gid",
            str(_NOBODY),
            "--disable-userns",
        ]
    # Root: every namespace --unshare-all gives except the user one (see the module docstring),
    # and only the capabilities the bootstrap needs to drop to the run's uid.
    return [
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CAP_SETUID",
        "--cap-add",
        "CAP_SETGID",
    ]


def _filesystem_args(work: Path, limits: SandboxLimits) -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _ETC:
        args += ["--ro-bind-try", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # Size-capped scratch (RAM): /tmp, and /dev/shm for multiprocessing's semaphores.
    for scratch in ("/tmp", "/dev/shm"):
        args += ["--perms", "1777", "--size", str(_mib(limits.tmp_mb)), "--tmpfs", scratch]
    # bwrap mounts in order: the interpreter goes on top of the scratch mounts, or a Python
    # that lives under /tmp (a virtualenv there) would be hidden by the private /tmp.
    args += _python_binds()
    args += ["--bind", str(work), WORKDIR]
    # bwrap's own tmpfs root and /dev would otherwise take unbounded writes wherever the
    # sandbox's uid owns them (in a user namespace it does); device nodes stay usable.
    args += ["--remount-ro", "/", "--remount-ro", "/dev"]
    return args


def _python_binds() -> list[str]:
    """The interpreter's prefixes (a venv and the Python it points to), read-only at their own
    paths so the venv's absolute links still resolve. bwrap would create the missing parents
    0700, which the run's uid could not traverse (a pyenv under /root), hence the --dir."""
    prefixes = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        str(Path(os.path.realpath(sys.executable)).parent.parent),
    }
    kept = sorted(p for p in map(os.path.realpath, prefixes) if not _under_system_dir(p))
    # A prefix inside another is already visible through it.
    roots = [p for p in kept if not any(p != q and Path(p).is_relative_to(q) for q in kept)]
    args: list[str] = []
    parents = sorted({str(a) for r in roots for a in Path(r).parents if str(a) != "/"})
    for parent in parents:
        args += ["--perms", "0755", "--dir", parent]
    for root in roots:
        args += ["--ro-bind", root, root]
    return args


def _under_system_dir(path: str) -> bool:
    return any(Path(path).is_relative_to(d) for d in _SYSTEM_DIRS)


def _env_args() -> list[str]:
    env = {
        "PATH": _PATH,
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    return [arg for name, value in env.items() for arg in ("--setenv", name, value)]


def _rlimits(limits: SandboxLimits) -> dict[str, tuple[int, int]]:
    """Soft CPU limit first (SIGXCPU, a clean exit), the hard one a second later (SIGKILL) for
    code that catches SIGXCPU. RLIMIT_AS bounds each process, not the run."""
    cpu = max(1, math.ceil(limits.cpu_seconds))  # the kernel counts whole seconds
    memory, fsize = _mib(limits.memory_mb), _mib(limits.max_file_mb)
    nproc = int(limits.max_processes)
    return {
        "RLIMIT_CPU": (cpu, cpu + 1),
        "RLIMIT_AS": (memory, memory),
        "RLIMIT_NPROC": (nproc, nproc),
        "RLIMIT_FSIZE": (fsize, fsize),
        "RLIMIT_CORE": (0, 0),
    }


def _mib(megabytes: float) -> int:
    return int(megabytes * 2**20)


def _read_status(fd: int) -> bytes:
    """Whatever the bootstrap wrote; the run is over, so never wait for more."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 64)
    except BlockingIOError:
        return b""


def _result(started: bool, run: process.Completed, limits: SandboxLimits) -> SandboxResult:
    killed_for: SandboxStatus | None = (
        "timeout" if run.timed_out else "output_limit" if run.truncated else None
    )
    status, reason = _classify(started, killed_for, run.returncode, run.stderr, limits)
    code = None if killed_for is not None or not started else run.returncode
    return SandboxResult(status, code, run.stdout, run.stderr, round(run.wall_s, 3), reason)


def _classify(
    started: bool,
    killed_for: SandboxStatus | None,
    returncode: int | None,
    err: str,
    limits: SandboxLimits,
) -> tuple[SandboxStatus, str]:
    """The code controls its exit code and stderr, so those only choose among the code's own
    failures; `sandbox_error` rests on the bootstrap's report alone."""
    if not started:
        if killed_for == "timeout":
            return "sandbox_error", f"sandbox did not start within {limits.wall_seconds:g} s"
        detail = _last_line(err) or f"bubblewrap exited with {returncode}"
        return "sandbox_error", f"sandbox failed to start: {detail}"
    if killed_for == "timeout":
        return "timeout", f"wall-clock limit of {limits.wall_seconds:g} s exceeded"
    if killed_for == "output_limit":
        return "output_limit", f"output exceeded {limits.max_output_bytes} bytes"
    if returncode == 0:
        return "ok", ""
    if "MemoryError" in err[-4096:]:
        return "memory", f"memory limit of {limits.memory_mb} MB exceeded"
    signum = _signal_of(returncode)
    if signum == signal.SIGXCPU:
        return "timeout", f"CPU time limit of {limits.cpu_seconds:g} s exceeded"
    if signum == signal.SIGXFSZ:
        return "nonzero_exit", f"file size limit of {limits.max_file_mb} MB exceeded"
    if signum is not None:
        return "killed", f"killed by {signal.Signals(signum).name}"
    return "nonzero_exit", f"exit code {returncode}"


def _signal_of(returncode: int | None) -> int | None:
    """bwrap reports a child killed by signal N as exit code 128 + N."""
    if returncode is None:
        return None
    signum = -returncode if returncode < 0 else returncode - 128
    return signum if signum in signal.valid_signals() and signum > 0 else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    return next((line for line in reversed(lines) if line), "")


def _sandbox_error(reason: str, wall: float) -> SandboxResult:
    return SandboxResult("sandbox_error", None, "", "", wall, reason)


def _remove_tree(path: Path) -> None:
    """A killed run's last processes may still be exiting; retry briefly rather than leak."""
    for _ in range(20):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.05)
