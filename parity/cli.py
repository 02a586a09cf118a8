"""`parity` command line. Exit codes: 0 ok, 1 a run failed or regressed, 2 bad input or usage."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import CaseError, ParityError


def _cmd_replay(args) -> int:
    from .replay import ReplayConfig, format_table, replay

    res = replay(
        ReplayConfig(
            cases=args.cases, checkpoint=args.checkpoint, runners=args.runners, pipelines=args.pipeline,
            out=args.out, batch_size=args.batch_size, cache_dir=args.cache_dir,
            progress=not args.no_progress, argv=sys.argv[1:],
        )
    )
    print(format_table(res.summary))
    print(f"wrote {res.out / 'frames.parquet'} and {res.out / 'summary.json'}")
    return res.exit_code


def _cmd_train(args) -> int:
    from .case import find_cases
    from .train import train

    ck = train(
        [str(p) for p in find_cases(args.cases)], args.out,
        eval_cases=[str(p) for p in find_cases(args.eval_cases)] if args.eval_cases else [],
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads,
        progress=not args.no_progress,
    )
    print(f"wrote {ck.path} and {ck.path.with_suffix('.json')} (sha256 {ck.sha256[:12]})")
    for name, m in ck.meta.get("metrics", {}).items():
        o = m["overall"]
        print(f"{name}: accuracy {o['accuracy']:.4f}  FP {o['fp']:.4f}  FN {o['fn']:.4f}")
        for case, c in m["cases"].items():
            print(f"    {case:<20} accuracy {c['accuracy']:.4f}  FP {c['fp']:.4f}  FN {c['fn']:.4f}")
    return 0


def _cmd_cases_generate(args) -> int:
    from .suites import generate_suite

    paths = generate_suite(args.suite, args.out, force=args.force, progress=not args.no_progress)
    print(f"{len(paths)} cases in {args.out}")
    return 0


def _cmd_cases_validate(args) -> int:
    from .case import find_cases, load_case

    problems, ok = [], 0
    try:
        paths = find_cases(args.paths)
    except CaseError as exc:
        problems.extend(exc.problems)
        paths = []
    for p in paths:
        try:
            c = load_case(p)
            ok += 1
            print(f"ok  {p} ({len(c)} frames)")
        except CaseError as exc:
            problems.extend(exc.problems)
    for line in problems:
        print(f"BAD {line}", file=sys.stderr)
    return 1 if problems else 0


def _cmd_runners(args) -> int:
    from .runners import RUNNERS

    for name, e in RUNNERS.items():
        missing = e.missing()
        state = "available" if not missing else f"missing {', '.join(missing)} ({e.install_hint})"
        print(f"{name:<10} {state:<12}  {e.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parity", description="Deployment-parity harness for lane-detection models.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("replay", help="replay cases through runners and score them")
    r.add_argument("--cases", nargs="+", required=True, help="case folders, or folders of cases")
    r.add_argument("--checkpoint", required=True, help="checkpoint .pt (with its .json sidecar)")
    r.add_argument("--runners", default="auto", help="comma-separated runner names, or 'auto' for all available here")
    r.add_argument("--pipeline", default="vehicle", help="vehicle, training, or both comma-separated")
    r.add_argument("--out", help="output folder (default reports/<run-id>)")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--cache-dir", help="artifact cache (default $PARITY_CACHE_DIR or ~/.cache/parity)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_replay)

    t = sub.add_parser("train", help="train the reference row-anchor lane model")
    t.add_argument("--cases", nargs="+", required=True, help="training cases (GT required)")
    t.add_argument("--eval-cases", nargs="+", help="held-out cases to report accuracy on")
    t.add_argument("--out", required=True, help="checkpoint path (.pt); the .json sidecar is written beside it")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("cases", help="generate and validate cases")
    csub = c.add_subparsers(dest="cases_command", required=True)
    g = csub.add_parser("generate", help="render a named synthetic suite")
    g.add_argument("--suite", default="default", help="default | train")
    g.add_argument("--out", required=True)
    g.add_argument("--force", action="store_true", help="re-render cases that already exist")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_cmd_cases_generate)
    v = csub.add_parser("validate", help="check case folders; exit 1 if any problem")
    v.add_argument("paths", nargs="+")
    v.set_defaults(func=_cmd_cases_validate)

    rn = sub.add_parser("runners", help="list runners and whether this machine can run them")
    rn.set_defaults(func=_cmd_runners)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="parity: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except ParityError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"parity: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("parity: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
