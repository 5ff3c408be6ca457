"""The `reasoner` command."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, get_args

from reasoner.config import add_config_options, add_model_options, flag_overrides, model_flags
from reasoner.errors import ReasonerError
from reasoner.procs import Terminated, interrupt_on_sigterm
from reasoner.runner.datasets import AnswerFormat


def _add_eval(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on a benchmark (resumable)",
        description="Flags override --config; --set overrides both.",
    )
    p.add_argument("benchmark", nargs="?", help="a benchmark in eval/ (default: gsm8k)")
    add_config_options(p, "EvalConfig", "sampling.temperature=0.7")
    add_model_options(p, "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--strategy", help="greedy (default), self-consistency, best-of-n, mcts, ...")
    p.add_argument("--n", type=int, help="samples per problem")
    p.add_argument("--scorer", help="verifier that ranks candidates (best-of-N, search)")
    p.add_argument(
        "--oracle",
        action="store_true",
        default=None,
        help="let scorers and feedback see the gold answer (strategy.oracle); labelled so",
    )
    p.add_argument("--budget-tokens", type=int, help="per problem: prompt + completion tokens")
    p.add_argument("--budget-calls", type=int, help="per problem: engine calls")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--limit", type=int, help="only the first N problems")
    p.add_argument("--seed", type=int)
    p.add_argument("--shard", metavar="I/N", help="run every N-th problem from the I-th")
    p.add_argument("--out", help="run folder; an existing one is resumed")
    p.add_argument("--split")
    p.add_argument("--data-dir", help="folder holding the benchmark data (or $REASONER_DATA_DIR)")
    p.add_argument("--dataset", help="your own JSONL file instead of the benchmark's data")
    p.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help="field mapping for --dataset: question=..., answer=..., id=...",
    )
    p.add_argument("--answer-format", choices=list(get_args(AnswerFormat)))
    p.add_argument("--skip-bad", action="store_true", help="skip and count malformed rows")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--verbose", action="store_true", help="engine logs on the terminal, not RUN/engine.log"
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="scale out on Ray: auto (the cluster `ray start` made), local (a private one), "
        "or HOST:PORT; engine replicas with --set ray.replicas=N (default 2)",
    )


def _eval_overrides(args: argparse.Namespace) -> list[str]:
    """Flags become dotted overrides, so flags, YAML and --set share one validation path."""
    pairs: list[tuple[str, Any]] = [
        ("benchmark", args.benchmark),
        *model_flags(args),
        ("strategy.name", args.strategy),
        ("strategy.n", args.n),
        ("strategy.scorer.name", args.scorer),
        ("strategy.oracle", args.oracle),
        ("strategy.budget_tokens", args.budget_tokens),
        ("strategy.budget_calls", args.budget_calls),
        ("sampling.temperature", args.temperature),
        ("sampling.max_tokens", args.max_tokens),
        ("limit", args.limit),
        ("shard", args.shard),
        ("seed", args.seed),
        ("out", args.out),
        ("split", args.split),
        ("data_dir", args.data_dir),
        ("dataset.path", args.dataset),
        ("dataset.answer_format", args.answer_format),
        ("ray.address", args.ray),
    ]
    if args.skip_bad:
        pairs.append(("skip_bad", True))
    if args.no_progress:
        pairs.append(("progress", False))
    roles = {"question": "question_field", "answer": "answer_field", "id": "id_field"}
    for item in args.field:
        role, _, name = item.partition("=")
        if role not in roles or not name:
            raise ReasonerError(f"--field {item!r}: expected one of {sorted(roles)}=FIELD_NAME")
        if not args.dataset:
            raise ReasonerError("--field maps the columns of --dataset; pass --dataset too")
        pairs.append((f"dataset.{roles[role]}", name))
    return flag_overrides(pairs)


def cmd_eval(args: argparse.Namespace) -> int:
    from reasoner.config import EvalConfig, load_config
    from reasoner.runner.evaluate import run_eval

    config = load_config(EvalConfig, args.config, _eval_overrides(args) + args.set)
    summary = run_eval(config)
    print_summary(summary)
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    acc = summary["accuracy"]
    low, high = summary["accuracy_ci95"]
    acc_text = "n/a" if acc is None else f"{acc:.3f}  (95% CI {low:.3f}-{high:.3f})"
    lines = [
        f"benchmark   {summary['benchmark']}   model {summary['model']}   "
        f"strategy {summary['strategy']} (n={summary['n']})",
        f"accuracy    {acc_text}   {summary['correct']}/{summary['scored']} scored",
        f"errors      {summary['verifier_errors']} verifier errors, {summary['no_answer']} without "
        f"an answer, {summary['bad_rows_skipped']} bad rows skipped",
    ]
    if "maj@k" in summary:
        lines.append(
            "maj@k       " + "  ".join(f"@{k} {v:.3f}" for k, v in summary["maj@k"].items())
        )
        picks = {k: v for k, v in summary["pass@k"].items() if k in summary["maj@k"]}
        lines.append("pass@k      " + "  ".join(f"@{k} {v:.3f}" for k, v in picks.items()))
    tokens, timing = summary["tokens"], summary["timing"]
    speed = timing["completion_tokens_per_s"]
    lines.append(
        f"tokens      {tokens['prompt']} in, {tokens['completion']} out; "
        f"{timing['generate_wall_s']:.1f} s generating"
        + (f", {speed:.1f} tokens/s" if speed else "")
    )
    if not summary["complete"]:
        lines.append("INCOMPLETE  re-run the same command to resume")
    if summary.get("oracle"):
        lines.append("ORACLE      scorers/feedback saw the gold answer: not a blind accuracy")
    if summary.get("adapter_train_overlap"):
        lines.append(
            f"HELD-OUT?   the adapter was trained on {summary['adapter_train_overlap']} "
            "of these problems"
        )
    print("\n".join(lines))


def cmd_models(args: argparse.Namespace) -> int:
    from reasoner.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, materialize

    if args.fetch:
        for alias in args.fetch:
            if alias not in EMBEDDED_MODELS:
                from reasoner.errors import ModelError, unknown_choice

                raise ModelError(unknown_choice("embedded model", alias, EMBEDDED_MODELS))
            print(f"{alias}: {materialize(alias)}")
        return 0
    for alias, model in EMBEDDED_MODELS.items():
        default = " (default)" if alias == DEFAULT_MODEL else ""
        print(
            f"{alias}{default}\n  {model.hf_id}; GGUF sha256 {model.sha256}\n"
            f"  packages: {' '.join(model.pip_requirements)}"
        )
    return 0


def _add_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="verify a JSONL file of candidate answers, or --selftest")
    p.add_argument("candidates", nargs="?", help="JSONL: one candidate completion per line")
    p.add_argument("--verifier", default="math")
    p.add_argument("--out", help="verdicts JSONL (default: <candidates>.verdicts.jsonl)")
    p.add_argument("--completion-field", default="completion")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--question-field", default="question")
    p.add_argument("--id-field", default="id")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per check")
    p.add_argument("--skip-bad", action="store_true", help="skip and count malformed rows")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="verifier constructor argument, e.g. prover=z3, model=NAME (reward-model, "
        "judge), base_url=URL (judge)",
    )
    p.add_argument(
        "--selftest",
        action="store_true",
        help="run the regression suite of --verifier (or of all, with --verifier all)",
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reasoner.runner.verify_file import CandidateFields, verify_file
    from reasoner.verifiers import load
    from reasoner.verifiers.selftest import run_suite, suite_paths

    if args.selftest:
        suites = suite_paths()
        chosen = list(suites) if args.verifier == "all" else [args.verifier]
        ok = True
        for name in chosen:
            if name not in suites:
                raise ReasonerError(
                    f"no regression suite for verifier {name!r}; suites: " + ", ".join(suites)
                )
            with load(name, timeout_s=args.timeout) as verifier:
                report = run_suite(verifier, suites[name])
            ok &= report.ok
            print(
                f"{name}: {report.passed}/{report.total} as expected, "
                f"{len(report.known_failures)} known failures, {len(report.failures)} unexpected"
            )
            for case in report.failures:
                print(
                    f"  UNEXPECTED {case['id']}: expected {case['expected']}, got {case['got']} "
                    f"({case['feedback']})"
                )
            for case in report.known_failures:
                print(f"  known      {case['id']}: {case['reason']}")
            for case in report.fixed:
                print(f"  now passes {case['id']} (was a known failure: update the suite)")
        return 0 if ok else 1
    if args.candidates is None:
        raise ReasonerError("reasoner verify: give a candidates file, or --selftest")
    source = Path(args.candidates)
    out = Path(args.out) if args.out else source.with_suffix(".verdicts.jsonl")
    if out.is_dir():
        raise ReasonerError(f"--out {out} is a folder; give the verdicts file's path")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ReasonerError(f"--out {out}: {above} is a file, not a folder")
    if out.exists() and source.exists() and out.samefile(source):
        raise ReasonerError(f"--out {out} is the candidates file itself; choose another path")
    fields = CandidateFields(
        args.completion_field, args.answer_field, args.question_field, args.id_field
    )
    with _load_verifier(args.verifier, args.timeout, args.option) as verifier:
        summary = verify_file(source, verifier, out, fields, args.skip_bad)
    print(json.dumps(summary, indent=2))
    return 0


def _load_verifier(name: str, timeout_s: float, options: list[str]) -> Any:
    """`--option` values are YAML-typed; a verifier that needs a generator (a judge) gets one
    built from its `model`/`base_url` options."""
    import yaml

    from reasoner.verifiers import VERIFIERS, load

    kwargs: dict[str, Any] = {"timeout_s": timeout_s}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ReasonerError(f"--option {item!r} is not of the form KEY=VALUE")
        kwargs[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    if VERIFIERS[name].needs_generator:
        from reasoner.models import ModelConfig, load_generator

        config = ModelConfig(
            name=kwargs.pop("model", ModelConfig().name), base_url=kwargs.pop("base_url", None)
        )
        kwargs["generator"] = load_generator(config)[0]
    try:
        return load(name, **kwargs)
    except TypeError as exc:  # an option the verifier does not take
        raise ReasonerError(f"verifier {name!r}: {exc}") from None


def cmd_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reasoner.runner.evaluate import merge_shards

    summary = merge_shards([Path(p) for p in args.runs], Path(args.out))
    print_summary(summary)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    # lazy: keeps matplotlib off start-up
    from reasoner.loops.report import is_iterate_folder, plot_rounds, rounds_table
    from reasoner.runner.report import write_report
    from reasoner.training.plots import is_training_run, training_section

    out = Path(args.out)
    folders = [Path(r) for r in args.runs]
    loops = [f for f in folders if is_iterate_folder(f)]
    trainings = [f for f in folders if f not in loops and is_training_run(f)]
    evals = [f for f in folders if f not in loops and f not in trainings]
    keys = None if args.by is None else [k for k in args.by.split(",") if k]
    sections: list[str] = []
    plots: list[Path] = []
    if evals:
        files = write_report(evals, out, breakdown_keys=keys)
        sections.append(files.markdown.read_text())
        plots += files.plots
    if trainings:
        text, pngs = training_section(trainings, out)
        sections.append(text + "".join(f"![{p.stem}]({p.name})\n" for p in pngs))
        plots += pngs
    if loops:
        png = plot_rounds(loops, out / "rounds.png")
        tables = "\n".join(rounds_table(f) for f in loops)
        sections.append(f"## Loop rounds\n\n{tables}\n![rounds]({png.name})\n")
        plots.append(png)
    markdown = out / "report.md"
    out.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(sections), encoding="utf-8")
    print(markdown.read_text())
    print(f"wrote {markdown}, {len(plots)} plots")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from reasoner.runner.catalog import catalog_rows, format_catalog

    print(format_catalog(catalog_rows()))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from reasoner.config_keys import describe, render

    print(render(describe(args.kind, args.keys)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasoner", description="LLM reasoning pipelines")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_eval(sub)
    models = sub.add_parser("models", help="list the embedded models, or --fetch them")
    models.add_argument(
        "--fetch",
        nargs="+",
        metavar="ALIAS",
        help="assemble, checksum and convert embedded models into the cache",
    )
    _add_verify(sub)
    merge = sub.add_parser("merge", help="merge the shards of a run (eval --shard i/n)")
    merge.add_argument("runs", nargs="+", help="the shard run folders")
    merge.add_argument("--out", required=True, help="the merged run folder (new)")
    sub.add_parser("list", help="the benchmarks, with counts, verifiers and licences")
    config = sub.add_parser(
        "config", help="a command's config keys with their types, defaults and descriptions"
    )
    config.add_argument(
        "kind", nargs="?", default="eval", help="eval, iterate, serve or train-STAGE (default eval)"
    )
    config.add_argument("keys", nargs="*", metavar="KEY", help="keys or sections (default: all)")
    report = sub.add_parser("report", help="compare run folders: Markdown, CSV and plots")
    report.add_argument("runs", nargs="+", metavar="RUN")
    report.add_argument("--out", required=True, help="folder for report.md, report.csv, PNGs")
    report.add_argument(
        "--by", help="comma-separated metadata keys to break accuracy down by (default: detected)"
    )
    from reasoner.loops import cli as iterate
    from reasoner.runner import compare, rescore, show
    from reasoner.serving import cli as serve
    from reasoner.training import cli as train

    extensions = {
        "compare": compare,
        "show": show,
        "rescore": rescore,
        "train": train,
        "iterate": iterate,
        "serve": serve,
    }
    for module in extensions.values():
        module.add_parser(sub)
    args = parser.parse_args(argv)
    interrupt_on_sigterm()
    from reasoner.models.engine_logs import configure_terminal

    configure_terminal(verbose=getattr(args, "verbose", False))
    try:
        if args.command in extensions:
            return extensions[args.command].run(args)
        commands = {
            "eval": cmd_eval,
            "models": cmd_models,
            "verify": cmd_verify,
            "merge": cmd_merge,
            "report": cmd_report,
            "list": cmd_list,
            "config": cmd_config,
        }
        return commands[args.command](args)
    except ReasonerError as exc:
        print(f"reasoner: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that is a file, a folder, read-only, missing, full
        print(f"reasoner: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"reasoner: error: a file is not UTF-8 text ({exc})", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"reasoner: {how}; finished problems are saved, re-run to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def describe_os_error(exc: OSError) -> str:
    """One line naming the path and what is wrong with it, as `cp` or `mkdir` would say it."""
    import os

    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(map(str, paths))}: {reason}" if paths else reason


if __name__ == "__main__":
    sys.exit(main())
