"""One training stage of `reasoner iterate` in a child process, so the loop gets its memory back.

A trainer leaves gigabytes behind in the process that ran it (the policy, optimizer state,
allocator caches, TRL/accelerate globals) that `del` and `gc.collect()` do not reliably return
to the OS. The loop keeps its inference engine between rounds, so that memory would sit beside
the engine's for every later round. Here the stage runs as `python -m reasoner.loops.train_child
SPEC RESULT` and everything it held is returned when it exits. A subprocess, not a
multiprocessing spawn, so the user's `__main__` is never re-imported.

The spec (the stage and its config as JSON) and the result (the adapter, the child's peak RSS,
or the error) are small JSON files in the round's folder. A ReasonerError in the child (a bad
record, divergence) reaches the parent as the same class with the same message; the child's
own stderr (progress bars, tracebacks) is the terminal's. The child dies with the loop (the
same parent watch as every other child, `reasoner.procs.watch_parent`), so a killed loop leaves
no trainer running; the trainer's checkpoints make the next run resume where it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from reasoner import procs
from reasoner.errors import ConfigError, DatasetError, ModelError, ReasonerError
from reasoner.runs import write_text_atomic

#: error classes the child reports by name; anything else becomes a ReasonerError
_ERRORS: dict[str, type[ReasonerError]] = {
    cls.__name__: cls for cls in (ReasonerError, ConfigError, DatasetError, ModelError)
}


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (ru_maxrss, KiB on Linux) in MiB."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def memory_report(train_peak_rss_mib: float | None) -> dict[str, float | None]:
    """What a round's processes held at their peak, in MiB, for round.json. The loop's own peak
    is since it started (ru_maxrss only grows); the training child's is this round's. With
    psutil, also what the loop and all its children (the engine's processes) hold now."""
    report: dict[str, float | None] = {
        "loop_peak_rss_mib": peak_rss_mib(),
        "train_child_peak_rss_mib": train_peak_rss_mib,
    }
    try:
        import psutil
    except ImportError:
        return report
    me = psutil.Process()
    tree = [me]
    with contextlib.suppress(psutil.Error):
        tree += me.children(recursive=True)
    total = 0
    for process in tree:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    report["loop_and_engine_rss_now_mib"] = round(total / 2**20, 1)
    return report


def train_in_child(stage: str, config: dict[str, Any], workdir: Path) -> tuple[str, float]:
    """Run `stage` with `config` (a StageConfig dumped as JSON) in a child process; returns the
    adapter (or model) folder and the child's peak RSS in MiB."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec, result = workdir / "train-spec.json", workdir / "train-result.json"
    spec.write_text(json.dumps({"stage": stage, "config": config}, indent=2) + "\n")
    result.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "reasoner.loops.train_child", str(spec), str(result), str(os.getpid())
    ]  # fmt: skip
    returncode = subprocess.run(command, check=False).returncode
    if not result.is_file():
        raise ReasonerError(
            f"the {stage} training stage stopped without a result (exit code {returncode}; a "
            "negative code is the signal that killed it, -9 often the OOM killer); its output "
            f"is above. Re-run the same command to resume from its last checkpoint in {workdir}"
        )
    outcome = json.loads(result.read_text())
    if "error" in outcome:
        raise _ERRORS.get(outcome.get("kind", ""), ReasonerError)(outcome["error"])
    return str(outcome["adapter"]), float(outcome["peak_rss_mib"])


def main(argv: list[str]) -> int:
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    if len(argv) > 2:  # the loop's pid: if it died before we got here, die at once
        os.environ[procs.PARENT_PID_ENV] = argv[2]
    procs.watch_parent()
    from reasoner.training import train_stage
    from reasoner.training.config import STAGE_CONFIGS

    spec = json.loads(spec_path.read_text())
    try:
        config = STAGE_CONFIGS[spec["stage"]].model_validate(spec["config"])
        adapter = train_stage(config)
    except ReasonerError as exc:
        kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _ERRORS), "")
        outcome: dict[str, Any] = {"error": str(exc), "kind": kind}
    else:
        outcome = {"adapter": str(adapter), "peak_rss_mib": peak_rss_mib()}
    write_text_atomic(result_path, json.dumps(outcome) + "\n")
    return 0 if "adapter" in outcome else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
