"""`parity` command line. Exit codes: 0 ok, 1 a run failed or regressed, 2 bad input or usage, 3 (gate) cannot compare."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import CaseError, ParityError, UsageError


def _cmd_replay(args) -> int:
    from .runs.replay import ReplayConfig, format_table, replay

    onnx_spec = _onnx_spec(args)  # first: an ONNX-only model takes --checkpoint's place
    res = replay(
        ReplayConfig(
            cases=args.cases, checkpoint=args.checkpoint, runners=args.runners, pipelines=args.pipeline,
            out=args.out, batch_size=args.batch_size, cache_dir=args.cache_dir,
            progress=not args.no_progress, argv=sys.argv[1:], engines=args.engine or [], trt_timing_cache=args.trt_timing_cache,
            resume=args.resume, overwrite=args.overwrite, executor=args.executor, workers=args.workers, threads=args.threads,
            ray_address=args.ray_address, outputs=args.outputs or [], onnx_spec=onnx_spec,
        )
    )
    print(format_table(res.summary))
    print("wrote " + ", ".join(str(res.out / f) for f in res.summary["files"]))
    if args.report:
        print(f"report: {_write_report(res.out)}")
    return res.exit_code


def _cmd_export_inputs(args) -> int:
    from .runs.export_inputs import command_lines, export_inputs
    from .runs.sweep import parse_severities

    onnx_spec = _onnx_spec(args)
    path = export_inputs(args.cases, args.checkpoint, args.out, fmt=args.format, pipelines=args.pipeline, batch_size=args.batch_size,
                         perturb=args.perturb, severities=parse_severities(args.severities) if args.severities else [],
                         seed=args.seed, invariance_probe=args.invariance_probe, graphs=args.graphs, cache_dir=args.cache_dir,
                         onnx_spec=onnx_spec,
                         argv=sys.argv[1:])
    from .runners.captures.manifest import read_manifest

    m = read_manifest(path)
    print(f"wrote {path}: {len(m.batches)} batches ({sum(b.size for b in m.batches if b.kind == 'frames')} frames) as {args.format}")
    for line in command_lines(path):
        print(line)
    return 0


def _cmd_import_checkpoint(args) -> int:
    from .models.foreign import import_checkpoint

    config = {"name": args.config} if args.config else {}
    ck = import_checkpoint(args.adapter, config, args.weights, args.out)
    print(f"wrote {ck.path} and {ck.path.with_suffix('.json')} ({args.adapter} {ck.meta['config'].get('name', '')}, "
          f"sha256 {ck.sha256[:12]}, from {args.weights})")
    return 0


def _onnx_spec(args) -> dict | None:
    """--onnx FILE --adapter NAME [--config NAME]: an ONNX-only model (replaces --checkpoint)."""
    if not getattr(args, "onnx", None):
        if getattr(args, "adapter", None):
            raise UsageError("--adapter names the family of an --onnx model; a checkpoint's sidecar names its own")
        return None
    args.checkpoint = args.onnx
    return {"adapter": args.adapter, "config": {"name": args.config} if args.config else {}}


def _write_report(folder) -> str:
    """The HTML report of a finished folder; a report that cannot be drawn never fails the run it describes."""
    from .decisions.report import write_report

    try:
        return str(write_report(folder))
    except Exception as exc:
        logging.getLogger("parity").warning("report not written: %s: %s", type(exc).__name__, exc)
        return f"not written ({type(exc).__name__}: {exc})"


def _cmd_report(args) -> int:
    from .decisions.report import write_report

    print(f"wrote {write_report(args.folder, args.out)}")
    return 0


def _cmd_train(args) -> int:
    from .cases.discovery import find_cases
    from .training.loop import train

    settings = {}
    for item in args.set or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--set takes key=value, not {item!r}")
        settings[key.strip()] = value.strip()
    from .training.zoo import ZOO_EPOCHS, ZOO_LR

    # A fine-tune gets the zoo's short, gentle schedule: a from-scratch one (30 epochs at 2e-3) undoes what the parent learnt.
    epochs = args.epochs if args.epochs is not None else (ZOO_EPOCHS if args.parent else 30)
    lr = args.lr if args.lr is not None else (ZOO_LR if args.parent else 2e-3)
    ck = train(
        [str(p) for p in find_cases(args.cases)], args.out,
        eval_cases=[str(p) for p in find_cases(args.eval_cases)] if args.eval_cases else [],
        select_cases=[str(p) for p in find_cases(args.select_cases)] if args.select_cases else [],
        unlabelled_cases=[str(p) for p in find_cases(args.unlabelled_cases)] if args.unlabelled_cases else [],
        epochs=epochs, batch_size=args.batch_size, lr=lr, seed=args.seed, threads=args.threads,
        progress=not args.no_progress, method=args.method, parent=args.parent, settings=settings,
        adapter_name=args.adapter, adapter_config={"name": args.config} if args.config else None,
    )
    print(f"wrote {ck.path} and {ck.path.with_suffix('.json')} (sha256 {ck.sha256[:12]})")
    for name, m in ck.meta.get("metrics", {}).items():
        o = m["overall"]
        print(f"{name}: accuracy {o['accuracy']:.4f}  FP {o['fp']:.4f}  FN {o['fn']:.4f}")
        for case, c in m["cases"].items():
            print(f"    {case:<20} accuracy {c['accuracy']:.4f}  FP {c['fp']:.4f}  FN {c['fn']:.4f}")
    return 0


def _cmd_cases_generate(args) -> int:
    from .cases.suites import generate_suite

    paths = generate_suite(args.suite, args.out, force=args.force, progress=not args.no_progress)
    print(f"{len(paths)} cases in {args.out}")
    return 0


def _cmd_cases_synth(args) -> int:
    from .cases.suites import scenario
    from .cases.synth import write_case

    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames must be at least 1, not {args.frames}")
    scn = scenario(args.scenario, seed=args.seed, frames=args.frames)
    streams = [s.strip() for s in args.streams.split(",")]
    path = write_case(scn, args.out, streams=streams)
    print(f"wrote {path} ({scn.frames} frames, scenario {args.scenario}, seed {scn.seed})")
    return 0


def _cmd_cases_preview(args) -> int:
    from .cases.discovery import find_cases
    from .cases.format import load_case
    from .cases.preview import contact_sheet

    cases = [load_case(p) for p in find_cases(args.paths)]
    print(f"wrote {contact_sheet(cases, args.out, frame=args.frame, columns=args.columns)} ({len(cases)} cases)")
    return 0


def _cmd_cases_import(args) -> int:
    from .cases import importers

    if args.format == "bag":
        return _import_bag(args)
    if args.format == "tusimple":
        paths = importers.import_tusimple(args.labels, args.root, args.out, fps=args.fps)
    elif args.format == "culane":
        paths = [importers.import_culane(args.folder, args.out, fps=args.fps, name=args.name)]
    elif args.format == "images":
        paths = [importers.import_images(args.folder, args.camera, args.out, fps=args.fps, name=args.name)]
    else:
        paths = [importers.import_video(args.video, args.camera, args.out, max_frames=args.max_frames, name=args.name)]
    for p in paths:
        print(f"wrote {p}")
    return 0


def _import_bag(args) -> int:
    from .cases.logs.importer import import_log, list_topics

    if args.list:
        rows = list_topics(args.path)
        print(f"{'topic':<40} {'type':<28} {'messages':>8} {'rate Hz':>8}  encoding  size")
        for r in rows:
            print(f"{r['topic']:<40} {r['type']:<28} {r['messages']:>8} {r['rate_hz']:>8.2f}  {r.get('encoding', ''):<8}  {r.get('size', '')}")
        print("rate: messages per second over the topic's span (a ROS bag's: the log's span)")
        return 0
    if not args.topic or not args.out:
        raise UsageError("cases import bag needs --topic and --out (or --list to see the topics)")
    root, n = import_log(args.path, args.topic, args.out, camera_info=args.camera_info, camera=args.camera, start_s=args.start,
                         end_s=args.end, every=args.every, name=args.name, yuv=args.yuv, time_source=args.time)
    print(f"wrote {root}: {n['frames']} frames of {args.topic} ({n['stream']} {n['size'][0]}x{n['size'][1]}, {n['fps']:.3g} fps), "
          f"kept in {args.path} (not copied); times from {n['time_source']} stamps")
    if n["dropped"] or n["gaps"]:
        print(f"  {n['dropped']} message(s) dropped (stamp repeats or goes back), {n['gaps']} gap(s) longer than 1.5 frame periods: "
              f"listed in {root / 'case.json'} source.dropped / source.gaps")
    if n["yuv_assumed"] and n["stream"] in ("nv12", "rgb"):
        print("  note: the log does not record the YUV matrix and range; assumed bt601-limited (the case's isp.assumed); give --yuv if the camera differs")
    return 0


def _cmd_export(args) -> int:
    from .cases.discovery import find_cases
    from .cases.exporters import case_gt, export
    from .cases.format import load_case
    from .runs.tables import run_lanes

    if bool(args.run) == bool(args.gt):
        raise UsageError("give either --run DIR (predictions) or --gt CASE... (ground truth)")
    if args.run:
        items = run_lanes(args.run, args.runner, args.pipeline)
    else:
        items = ((c, *case_gt(c), None) for c in (load_case(p) for p in find_cases(args.gt)))
    n = export(args.format, items, args.out, only_labelled=args.only_labelled)
    print(f"wrote {n} {'lines' if args.format == 'tusimple' else 'files'} to {args.out}")
    return 0


def _cmd_cases_validate(args) -> int:
    from .cases.discovery import find_cases
    from .cases.format import load_case

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
    return 2 if problems else 0  # bad input, as everywhere


def _cmd_perturb_list(args) -> int:
    from .preprocessing.perturb import REGISTRY, SUITES

    print(f"{'name':<20} {'family':<13} {'stage':<9} {'unit':<34} severities 1..5")
    for p in REGISTRY.values():
        print(f"{p.name:<20} {p.family:<13} {p.stage:<9} {p.unit:<34} {', '.join(map(str, p.values))}")
    print(f"{len(REGISTRY)} perturbations; suites: " + "; ".join(f"{k} ({len(v)})" for k, v in SUITES.items()))
    return 0


def _cmd_perturb_show(args) -> int:
    from .cases.format import load_case
    from .models.checkpoint import load_checkpoint
    from .models.rowanchor import RowAnchorAdapter
    from .preprocessing.preview import severity_grid
    from .runs.inputs import resolve_pipeline

    case = load_case(args.case)
    if args.frame is not None and not 0 <= args.frame < len(case):
        raise UsageError(f"--frame {args.frame}: {case.root} has frames 0..{len(case) - 1}")
    ckpt = load_checkpoint(args.checkpoint) if args.checkpoint else None
    adapter = ckpt.adapter() if ckpt else RowAnchorAdapter()
    pipe = resolve_pipeline(args.pipeline, adapter.pipelines())
    path = severity_grid(args.name, case, args.frame, args.out, pipe, model=ckpt.build_model() if ckpt else None, seed=args.seed)
    print(f"wrote {path}")
    return 0


def _cmd_sweep(args) -> int:
    from .runs.sweep import SweepConfig, format_summary, parse_severities, sweep

    out, summary, code = sweep(SweepConfig(
        cases=args.cases, checkpoint=args.checkpoint, runners=args.runners, pipeline=args.pipeline,
        perturb=args.perturb, severities=parse_severities(args.severities), window_s=args.window_s, seed=args.seed,
        out=args.out, batch_size=args.batch_size, cache_dir=args.cache_dir, progress=not args.no_progress, argv=sys.argv[1:],
        resume=args.resume, overwrite=args.overwrite, executor=args.executor, workers=args.workers, threads=args.threads,
        ray_address=args.ray_address, outputs=args.outputs or [],
    ))
    for runner in dict.fromkeys(r["runner"] for r in summary["results"]):
        print(format_summary(summary, runner))
    for f in summary["findings"]:
        print(f"FINDING: {f}")
    for e in summary["errors"]:
        print(f"FAILED case {e['case']}: {e['error']}")
    print("wrote " + ", ".join(str(out / f) for f in summary["files"]))
    return code


def _cmd_rank(args) -> int:
    from .decisions.leaderboard import format_board
    from .decisions.rank import RankConfig, rank
    from .runs.sweep import parse_severities

    if args.n_boot < 100:
        raise UsageError(f"--n-boot {args.n_boot}: at least 100 resamples (an interval from fewer is noise; the default is 2000)")
    out, summary, code = rank(RankConfig(
        checkpoints=args.checkpoints, cases=args.cases, runners=args.runners, deployed=args.deployed, pipelines=args.pipelines,
        perturb_pipeline=args.perturb_pipeline, perturb=args.perturb, severities=parse_severities(args.severities),
        window_s=args.window_s, baseline=args.baseline, config=args.config, n_boot=args.n_boot, seed=args.seed, out=args.out,
        batch_size=args.batch_size, cache_dir=args.cache_dir, progress=not args.no_progress, argv=sys.argv[1:],
        overwrite=args.overwrite, executor=args.executor, workers=args.workers, threads=args.threads, ray_address=args.ray_address,
        methods=args.methods or [],
    ))
    print(format_board(summary))
    if summary.get("method_leaderboard"):
        from .decisions.methods import format_methods

        print()
        print(format_methods(summary["method_leaderboard"]))
    u = summary["units"]
    print(f"units: {u['total']} ({u['cached']} from the cache, {u['evaluated']} evaluated)")
    for e in summary["errors"]:
        print(f"FAILED {e['checkpoint']} on {e['case']} ({e['pipeline']}, {e['perturbation']} {e['severity']}): {e['error']}")
    print("wrote " + ", ".join(str(out / f) for f in summary["files"]))
    return code


def _cmd_claims(args) -> int:
    from .decisions.claims import format_claims
    from .decisions.claims_run import run_claims
    from .training.probes import ProbeSettings

    for flag, v in (("--every", args.every), ("--noise-draws", args.noise_draws)):
        if v < 1:
            raise UsageError(f"{flag} must be at least 1, got {v}")
    for flag, v in (("--epsilon", args.epsilon), ("--noise-sigma", args.noise_sigma)):
        if not (v > 0 and v < 1e3):
            raise UsageError(f"{flag} must be a positive number, got {v}")
    settings = ProbeSettings(every=args.every, epsilon_levels=args.epsilon, noise_sigma=args.noise_sigma, noise_draws=args.noise_draws)
    out, summary = run_claims(args.rank, args.out, settings, progress=print if not args.no_progress else (lambda m: None))
    print(format_claims(summary["claims"]))
    pr = summary["probes"]
    print(f"probes: {pr['cached'] + pr['evaluated']} checkpoint x case ({pr['cached']} from the cache) in {pr['seconds']:.0f} s; "
          f"Holm's correction over {sum(1 for r in summary['claims'] if r.get('why_not') is None)} measured claims")
    for w in summary["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {out / 'claims.json'}, {out / 'claims.md'}")
    return 0


def _cmd_soup(args) -> int:
    from .decisions.soup import SoupConfig, soup

    ck, rep = soup(SoupConfig(
        ingredients=args.ingredients, cases=args.cases, out=args.out, criterion=args.criterion, runner=args.runner,
        pipeline=args.pipeline, window_s=args.window_s, config=args.config, seed=args.seed, batch_size=args.batch_size,
        cache_dir=args.cache_dir, progress=not args.no_progress, argv=sys.argv[1:],
    ))
    for t in rep["trail"]:
        print(f"{'accepted' if t['accepted'] else 'rejected':<9} {t['ingredient']:<24} {rep['criterion']} {t['criterion']:.5g}")
    print(f"soup of {len(rep['accepted'])}: {', '.join(rep['accepted'])} -> {ck.path}")
    return 0


def _cmd_score(args) -> int:
    from . import atomic
    from .cases.discovery import find_cases
    from .cases.format import load_case
    from .metrics.external import format_scores, score_predictions

    res = score_predictions([load_case(p) for p in find_cases(args.gt)], args.pred, apply_run_time_rule=not args.ignore_run_time)
    print(format_scores(res["cases"]))
    o = res["overall"]
    print(f"overall ({o['frames']} labelled frames): accuracy {o['accuracy']:.4f}, FP {o['fp']:.4f}, FN {o['fn']:.4f}"
          + (f"; {o['frames_over_run_time']} frames over the official 200 ms run time scored 0" if o["frames_over_run_time"] else ""))
    if res["skipped_unlabelled"]:
        print(f"skipped {res['skipped_unlabelled']} predictions for unlabelled frames")
    if args.out:
        atomic.write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0


def _cmd_localize(args) -> int:
    from . import atomic
    from .cases.format import load_case
    from .models.checkpoint import load_checkpoint
    from .runners.artifacts import ArtifactCache
    from .runs.localize import bar_chart, format_result, localize

    if args.capture:
        return _localize_capture(args)
    if not args.case:
        raise UsageError("localize needs --case (or --capture DIR: layer tensors from a target)")
    res = localize(load_checkpoint(args.checkpoint), load_case(args.case), runner=args.runner, pipeline=args.pipeline,
                   frames=args.frames, tolerance_px=args.tolerance_px, max_keep=args.max_keep, cache=ArtifactCache(args.cache_dir))
    print(format_result(res))
    out = Path(args.out)
    atomic.write_json(out / "localize.json", res)
    print(f"wrote {bar_chart(res, out / 'layers.png')} and {out / 'localize.json'}")
    return 0 if res["ok"] else 1  # no set within --max-keep or the tolerance, or one the whole case does not confirm


def _localize_capture(args) -> int:
    from . import atomic
    from .models.checkpoint import load_checkpoint
    from .runners.artifacts import ArtifactCache
    from .runs.localize_capture import format_capture_result, localize_capture

    res = localize_capture(load_checkpoint(args.checkpoint), args.capture, inputs=args.inputs, batch=args.batch,
                           tolerance_px=args.tolerance_px, max_keep=args.max_keep, search=args.search, cache=ArtifactCache(args.cache_dir))
    print(format_capture_result(res))
    out = Path(args.out)
    atomic.write_json(out / "localize.json", res)
    print(f"wrote {out / 'localize.json'}")
    return 1 if res["first_diverging"] else 0


def _seed_range(n: int) -> list[int]:
    if n < 1:
        raise UsageError(f"--seeds must be at least 1, got {n}")
    return list(range(n))


def _cmd_zoo(args) -> int:
    from .cases.discovery import find_cases
    from .training.zoo import build_zoo

    rows = build_zoo([str(p) for p in find_cases(args.cases)], [str(p) for p in find_cases(args.eval_cases)] if args.eval_cases else [],
                     args.parent, args.out, select_cases=[str(p) for p in find_cases(args.select_cases)] if args.select_cases else [],
                     unlabelled_cases=[str(p) for p in find_cases(args.unlabelled_cases)] if args.unlabelled_cases else [], methods=args.methods.split(",") if args.methods else None, epochs=args.epochs,
                     lr=args.lr, seeds=_seed_range(args.seeds), threads=args.threads, progress=not args.no_progress)
    print(f"{'method':<14} {'seed':>4} {'wall s':>7} {'acc training':>13} {'acc vehicle':>12}")
    for r in rows:
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        print(f"{r['method']:<14} {r['seed']:>4} {f(r['wall_s'], '>7.0f')} {f(r['accuracy_training'], '>13.4f')} {f(r['accuracy_vehicle'], '>12.4f')}")
    print(f"wrote {args.out}/zoo.json")
    return 0


def _cmd_baseline(args) -> int:
    from .decisions.baseline import write_baseline

    doc = write_baseline(args.run, args.out, args.name)
    runners = sorted({e["runner"] for e in doc["entries"]})
    print(f"wrote {args.out}: {len(doc['entries'])} entries ({len(doc['provenance']['cases'])} cases x {', '.join(runners)} "
          f"x {', '.join(sorted({e['pipeline'] for e in doc['entries']}))}, and overall)")
    return 0


def _cmd_gate(args) -> int:
    from .decisions.gate import GateConfig, gate

    out, doc, code = gate(GateConfig(
        baseline=args.baseline, out=args.out, run=args.run, config=args.config, cases=args.cases, checkpoint=args.checkpoint,
        runners=args.runners, pipelines=args.pipeline, engines=args.engine or [], engine_as=args.engine_as, rename=args.rename or [],
        outputs=args.outputs or [],
        batch_size=args.batch_size, cache_dir=args.cache_dir, progress=not args.no_progress, argv=sys.argv[1:],
        overwrite=args.overwrite,
    ))
    # The headline first (a CI log's first gate line names the runner and the delta that failed), then
    # what differs and the failures grouped; every single check is in junit.xml and gate.json.
    print(doc["headline"])
    for line in doc["summary"]:
        print(line)
    print("wrote " + ", ".join(str(out / f) for f in doc["files"]))
    if args.report:
        print(f"report: {_write_report(out)}")
    return code


def _cmd_methods_list(args) -> int:
    from .training.recipes import all_recipes

    for name, r in all_recipes().items():
        settings = ", ".join(f"{k}={v}" for k, v in r.defaults.items()) or "-"
        print(f"{name:<12} {r.summary}" + (" [needs --from]" if r.needs_parent else ""))
        print(f"{'':<12} settings: {settings}; source: {r.source}")
    return 0


def _cmd_runners(args) -> int:
    from .runners import RUNNERS

    for name, e in RUNNERS.items():
        reason = e.unavailable_reason()
        print(f"{name:<16} {'available' if reason is None else 'unavailable':<12} {e.description}" + (f"\n{'':<29}{reason}" if reason else ""))
    return 0


def default_checkpoint() -> str:
    """The reference model `make replay` trains, unless $PARITY_CHECKPOINT names another."""
    return os.environ.get("PARITY_CHECKPOINT", "checkpoints/reference.pt")


def _executor_options(p) -> None:
    p.add_argument("--workers", type=int, help="run cases in a local pool of N processes (docs/scale.md)")
    p.add_argument("--executor", choices=["serial", "local", "ray"], help="where units run (default: serial, or local with --workers)")
    p.add_argument("--threads", type=int, help="compute threads per unit (default: cores / workers; part of the run's settings)")
    p.add_argument("--ray-address", help="an existing Ray cluster (ray://host:10001 or host:6379); default: a local instance")


def _onnx_options(p) -> None:
    p.add_argument("--onnx", help="an ONNX-only model (no PyTorch weights): the reference becomes ONNX Runtime fp32 on it; needs --adapter")
    p.add_argument("--adapter", help="with --onnx: the model family that prepares its input and decodes its output (ufld, rowanchor, ...)")
    p.add_argument("--config", help="with --onnx: the adapter's named configuration (ufld: culane-r18, tusimple-r18, ...)")


def _outputs_option(p) -> None:
    p.add_argument("--outputs", action="append", metavar="NAME=PATH",
                   help="outputs captured on a target, run as runner NAME (repeatable): a capture-script folder, Polygraphy "
                        "--save-outputs JSON, trtexec raw bindings (batch_*/) or --exportOutput JSON, .npy/.npz; options "
                        ",inputs=EXPORT_DIR ,precision=fp16 ,format=F (docs/target.md)")


def _folder_options(p) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue the killed run in --out (the same command re-run does so too); refuse if there is none")
    p.add_argument("--overwrite", action="store_true", help="replace a different run found in --out (only the files its manifest lists)")


def _everywhere(parser, flag: str, **kw) -> None:
    """Add `flag` to every (sub)command that has no subcommands of its own, so it works after the command name too."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        if flag not in parser._option_string_actions:
            parser.add_argument(flag, **kw)
        return
    for action in subs:
        for child in action.choices.values():
            _everywhere(child, flag, **kw)


def _runner_help(default_note: str) -> str:
    from .runners import RUNNERS  # the registry only: no backend is imported

    return f"comma-separated runner names ({', '.join(RUNNERS)}; `parity runners` says which run here){default_note}"


PIPELINE_HELP = ("comma-separated: vehicle, training, or a pipeline file (.toml/.json: resize kernel, pixel centre, crop, "
                 "YUV matrix/range, normalisation; docs/preprocessing.md)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parity", description="Deployment-parity harness for lane-detection models.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("--max-frame-pixels", type=int, default=argparse.SUPPRESS,
                   help="largest frame a case may declare, width x height (default 8192 x 8192 = 67108864)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("replay", help="replay cases through runners and score them")
    r.add_argument("--cases", nargs="+", required=True, help="case folders, or folders of cases")
    r.add_argument("--checkpoint", default=default_checkpoint(),
                   help="checkpoint .pt with its .json sidecar (default $PARITY_CHECKPOINT or checkpoints/reference.pt)")
    r.add_argument("--runners", default="auto", help=_runner_help(", or 'auto' for all available here"))
    r.add_argument("--pipeline", default="vehicle", help=PIPELINE_HELP + " (default vehicle)")
    r.add_argument("--out", help="output folder (default reports/<run-id>)")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--cache-dir", help="artifact cache (default $PARITY_CACHE_DIR or ~/.cache/parity)")
    r.add_argument("--engine", action="append", help="a prebuilt TensorRT .engine/.plan to run as an extra runner (repeatable)")
    r.add_argument("--trt-timing-cache", help="TensorRT timing cache file: read if present, written after a build (reproducible rebuilds)")
    _outputs_option(r)
    _onnx_options(r)
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--no-report", dest="report", action="store_false", help="do not write report.html beside summary.json")
    _folder_options(r)
    _executor_options(r)
    r.set_defaults(func=_cmd_replay)

    ic = sub.add_parser("import-checkpoint", help="make a checkpoint trained elsewhere (the authors' .pth) a parity checkpoint")
    ic.add_argument("--adapter", required=True, help="the model family: ufld (Ultra-Fast-Lane-Detection v1), rowanchor, or an adapter package's")
    ic.add_argument("--config", help="the adapter's named configuration (ufld: culane-r18, culane-r34, tusimple-r18, tusimple-r34)")
    ic.add_argument("--weights", required=True, help="the foreign weights file (.pth)")
    ic.add_argument("--out", required=True, help="the parity checkpoint (.pt); its .json sidecar is written beside it")
    ic.set_defaults(func=_cmd_import_checkpoint)

    x = sub.add_parser("export-inputs", help="write the exact input tensors a replay feeds, for an engine run on the target (docs/target.md)")
    x.add_argument("--cases", nargs="+", required=True)
    x.add_argument("--checkpoint", default=default_checkpoint())
    x.add_argument("--pipeline", default="vehicle", help="vehicle, training, both comma-separated, or a pipeline file")
    x.add_argument("--perturb", help="also the inputs under these perturbations (names or a suite; not fgsm)")
    x.add_argument("--severities", help="with --perturb: e.g. 1,3,5 or 1..5")
    x.add_argument("--seed", type=int, default=0, help="the perturbations' seed (a sweep's --seed)")
    x.add_argument("--batch-size", type=int, default=16, help="the replay's --batch-size (default 16)")
    x.add_argument("--invariance-probe", action="store_true", help="per case and pipeline, one batch of its first frame repeated (batch-invariance rule)")
    x.add_argument("--format", default="trtexec", choices=["trtexec", "polygraphy", "npy"])
    x.add_argument("--graphs", default="fp32,fp16", help="ONNX graphs to write beside the inputs: fp32, fp16, both or none")
    _onnx_options(x)
    x.add_argument("--cache-dir")
    x.add_argument("--out", required=True)
    x.set_defaults(func=_cmd_export_inputs)

    t = sub.add_parser("train", help="train the reference row-anchor lane model")
    t.add_argument("--cases", nargs="+", required=True, help="training cases (GT required)")
    t.add_argument("--eval-cases", nargs="+", help="held-out cases to report accuracy on")
    t.add_argument("--select-cases", nargs="+", help="cases a recipe makes its choices on (wise-ft's alpha, soup-greedy's ingredients): "
                                                     "the validation suite, never the cases you rank on")
    t.add_argument("--unlabelled-cases", nargs="+", help="recordings without labels that uat-ot/uat-ft learn from (the unlabelled suite)")
    t.add_argument("--out", required=True, help="checkpoint path (.pt); the .json sidecar is written beside it")
    t.add_argument("--epochs", type=int, help="default 30 from scratch; with --from, the zoo's fine-tune (ZOO_EPOCHS)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, help="peak learning rate: default 2e-3 from scratch, 5e-4 with --from (the zoo's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    t.add_argument("--method", default="erm", help="training recipe (`parity methods list`)")
    t.add_argument("--from", dest="parent", help="checkpoint to fine-tune from (fine-tuning recipes need it)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="a recipe setting (repeatable)")
    t.add_argument("--adapter", help="the model family to train from scratch (default rowanchor; with --from: the parent's)")
    t.add_argument("--config", help="the adapter's named configuration (ufld: culane-r18, tusimple-r18, ...)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("cases", help="generate and validate cases")
    csub = c.add_subparsers(dest="cases_command", required=True)
    g = csub.add_parser("generate", help="render a named synthetic suite")
    g.add_argument("--suite", default="default", help="default | train | validation | unlabelled (no GT: what UAT learns from)")
    g.add_argument("--out", required=True)
    g.add_argument("--force", action="store_true", help="re-render cases that already exist")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_cmd_cases_generate)
    sy = csub.add_parser("synth", help="render one named synthetic scenario")
    sy.add_argument("--scenario", required=True, help="e.g. straight_day, night, lane_change (see parity/cases/suites.py)")
    sy.add_argument("--frames", type=int)
    sy.add_argument("--seed", type=int)
    sy.add_argument("--streams", default="nv12,jpeg", help="recorded streams: nv12, jpeg, png")
    sy.add_argument("--out", required=True)
    sy.set_defaults(func=_cmd_cases_synth)
    pv = csub.add_parser("preview", help="PNG contact sheet: one frame per case with GT lanes drawn")
    pv.add_argument("paths", nargs="+")
    pv.add_argument("--out", required=True, help="PNG file")
    pv.add_argument("--frame", type=int, help="frame index (default: the middle frame)")
    pv.add_argument("--columns", type=int, default=3)
    pv.set_defaults(func=_cmd_cases_preview)
    im = csub.add_parser("import", help="import TuSimple, CULane, a folder of images, a video or a drive log (ROS bag, MCAP)")
    isub = im.add_subparsers(dest="format", required=True, metavar="FORMAT")
    fmts = {
        "tusimple": "TuSimple label JSON lines + clip folders: one case per clip",
        "culane": "a CULane folder of *.jpg with *.lines.txt beside them",
        "images": "a folder of JPEG/PNG frames",
        "video": "a video file (OpenCV decodes it)",
        "bag": "one image topic of a ROS 1 .bag, a ROS 2 bag folder or an .mcap file; frames stay in the log",
    }
    fp = {k: isub.add_parser(k, help=h, description=h) for k, h in fmts.items()}
    for k, fmt_parser in fp.items():
        fmt_parser.add_argument("--out", required=k != "bag", help="folder the case(s) are written under")
        fmt_parser.set_defaults(func=_cmd_cases_import)
    fp["tusimple"].add_argument("--labels", nargs="+", required=True, help="label JSON-lines files")
    fp["tusimple"].add_argument("--root", required=True, help="dataset root holding the clips/ folders")
    fp["tusimple"].add_argument("--fps", type=float, default=20.0)
    fp["culane"].add_argument("--folder", required=True, help="folder of frames")
    fp["culane"].add_argument("--fps", type=float, default=30.0)
    fp["images"].add_argument("--folder", required=True, help="folder of frames")
    fp["images"].add_argument("--fps", type=float, required=True)
    fp["video"].add_argument("--video", required=True, help="the video file")
    fp["video"].add_argument("--max-frames", type=int)
    for k in ("images", "video", "bag"):
        fp[k].add_argument("--camera", help="camera JSON (fx, fy, cx, cy[, height_m, pitch_deg, roll_deg])")
    for k in ("culane", "images", "video", "bag"):
        fp[k].add_argument("--name", help="case name (default: the folder, file or log and topic name)")
    bag = fp["bag"]
    bag.add_argument("path", help="a ROS 1 .bag, a ROS 2 bag folder (metadata.yaml) or a .mcap file")
    bag.add_argument("--list", action="store_true", help="print the log's topics (image topics with encoding, size, rate) and stop")
    bag.add_argument("--topic", help="the image topic (sensor_msgs/Image or CompressedImage, foxglove RawImage or CompressedImage)")
    bag.add_argument("--camera-info", help="a sensor_msgs/CameraInfo topic whose first message becomes the case's camera")
    bag.add_argument("--start", type=float, help="seconds after the topic's first message to start at")
    bag.add_argument("--end", type=float, help="seconds after the topic's first message to stop before")
    bag.add_argument("--every", type=int, default=1, help="keep every N-th message")
    bag.add_argument("--yuv", help="the camera's YUV matrix and range, which logs do not record: bt601-limited (assumed if not given), "
                                   "bt601-full, bt709-limited, bt709-full")
    bag.add_argument("--time", default="auto", choices=["auto", "header", "log"],
                     help="frame times from header stamps, log (receive) times, or auto: header stamps where every message has one")
    v = csub.add_parser("validate", help="check case folders; exit 1 if any problem")
    v.add_argument("paths", nargs="+")
    v.set_defaults(func=_cmd_cases_validate)

    ex = sub.add_parser("export", help="lanes to TuSimple JSON lines or CULane .lines.txt for the official evaluators")
    ex.add_argument("--format", required=True, choices=["tusimple", "culane"])
    ex.add_argument("--run", help="replay run folder (exports predictions)")
    ex.add_argument("--runner", default="torch")
    ex.add_argument("--pipeline", default="vehicle")
    ex.add_argument("--gt", nargs="+", help="case folders (exports their ground truth)")
    ex.add_argument("--only-labelled", action="store_true", help="skip frames without GT labels")
    ex.add_argument("--out", required=True, help="tusimple: a .json file; culane: a folder")
    ex.set_defaults(func=_cmd_export)

    pt = sub.add_parser("perturb", help="list perturbations, or draw one at every severity")
    psub = pt.add_subparsers(dest="perturb_command", required=True)
    pl = psub.add_parser("list", help="name, family, stage and the value at each severity")
    pl.set_defaults(func=_cmd_perturb_list)
    ps = psub.add_parser("show", help="PNG grid of what the model sees at severities 0..5")
    ps.add_argument("name")
    ps.add_argument("--case", required=True)
    ps.add_argument("--frame", type=int, default=0)
    ps.add_argument("--pipeline", default="vehicle")
    ps.add_argument("--checkpoint", help="needed for fgsm (its gradient)")
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--out", required=True)
    ps.set_defaults(func=_cmd_perturb_show)

    sw = sub.add_parser("sweep", help="perturbation x severity sweep over cases and runners")
    sw.add_argument("--cases", nargs="+", required=True)
    sw.add_argument("--checkpoint", default=default_checkpoint(), help="default $PARITY_CHECKPOINT or checkpoints/reference.pt")
    sw.add_argument("--runners", default="torch", help=_runner_help(" (default torch)"))
    sw.add_argument("--pipeline", default="vehicle", help=PIPELINE_HELP + " (default vehicle)")
    sw.add_argument("--perturb", default="deploy", help="suite (deploy, corruptions, all) or comma-separated names")
    sw.add_argument("--severities", default="1..5")
    sw.add_argument("--window-s", type=float, default=3.0, help="seconds of consecutive frames per case, centred (0: the whole case)")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--out", help="output folder (default reports/sweep-<run-id>)")
    sw.add_argument("--batch-size", type=int, default=16)
    sw.add_argument("--cache-dir")
    _outputs_option(sw)
    sw.add_argument("--no-progress", action="store_true")
    _folder_options(sw)
    _executor_options(sw)
    sw.set_defaults(func=_cmd_sweep)

    rk = sub.add_parser("rank", help="rank candidate checkpoints by deployed accuracy, bending, jitter and gaps, with case-bootstrap intervals")
    rk.add_argument("--checkpoints", nargs="+", required=True, help="checkpoint files or quoted globs ('checkpoints/zoo/*.pt')")
    rk.add_argument("--methods", nargs="+", metavar="LABEL=PATTERN", help="group checkpoints (by name, globs) as one method on the "
                                                                         "method board, e.g. 'erm-a=erm,erm-s1,erm-s2' (default: each sidecar's method)")
    rk.add_argument("--cases", nargs="+", required=True)
    rk.add_argument("--runners", default="torch,ort-fp16", help=_runner_help("; torch (the parity reference) is always run"))
    rk.add_argument("--deployed", help="the runner that stands for the deployed engine (default: the last of --runners)")
    rk.add_argument("--pipelines", default="training,vehicle")
    rk.add_argument("--perturb-pipeline", default="vehicle", help="the pipeline perturbations are applied to")
    rk.add_argument("--perturb", default="deploy", help="suite or comma-separated names; 'none' for no perturbations")
    rk.add_argument("--severities", default="1,3,5")
    rk.add_argument("--window-s", type=float, default=3.0, help="seconds of consecutive frames per case, centred (0: the whole case)")
    rk.add_argument("--baseline", help="checkpoint name the others are compared with (default: erm if ranked, else the first)")
    rk.add_argument("--config", help="TOML file with a [rank.score] table of score weights (defaults: parity/decisions/score.toml)")
    rk.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of cases")
    rk.add_argument("--seed", type=int, default=0)
    rk.add_argument("--out", help="output folder (default reports/rank-<run-id>)")
    rk.add_argument("--batch-size", type=int, default=16)
    rk.add_argument("--cache-dir", help="artifacts and evaluation units (default $PARITY_CACHE_DIR or ~/.cache/parity)")
    rk.add_argument("--no-progress", action="store_true")
    rk.add_argument("--overwrite", action="store_true", help="replace the files of a different rank found in --out")
    _executor_options(rk)
    rk.set_defaults(func=_cmd_rank)

    cl = sub.add_parser("claims", help="the source documents' claims tested on a ranked zoo: value, interval over seeds and cases, verdict")
    cl.add_argument("--rank", required=True, help="a finished parity rank folder over a zoo with >= 3 seeds per recipe (make rank)")
    cl.add_argument("--out", help="folder for claims.json, claims.md and the probe cache (default: RANK/claims)")
    cl.add_argument("--every", type=int, default=4, help="probe every n-th labelled frame (default 4)")
    cl.add_argument("--epsilon", type=float, default=2.0, help="FGSM probe step in 8-bit pixel levels (default 2)")
    cl.add_argument("--noise-sigma", type=float, default=0.05, help="weight-noise probe, share of each tensor's RMS weight (default 0.05)")
    cl.add_argument("--noise-draws", type=int, default=3)
    cl.add_argument("--no-progress", action="store_true")
    cl.set_defaults(func=_cmd_claims)

    so = sub.add_parser("soup", help="greedy model soup chosen by a deployment metric on the deployed runner")
    so.add_argument("--ingredients", nargs="+", required=True, help="checkpoints fine-tuned from one start (files or quoted globs)")
    so.add_argument("--cases", nargs="+", required=True, help="held-out cases the criterion is measured on")
    so.add_argument("--criterion", default="deployment-score", help="deployment-score (default), deployed-jitter or accuracy")
    so.add_argument("--runner", default="ort-fp16", help="the deployed runner the criterion is measured on")
    so.add_argument("--pipeline", default="vehicle")
    so.add_argument("--window-s", type=float, default=3.0, help="seconds of consecutive frames per case, centred (0: the whole case)")
    so.add_argument("--config", help="TOML with a [rank.score] table (deployment-score weights)")
    so.add_argument("--seed", type=int, default=0)
    so.add_argument("--batch-size", type=int, default=16)
    so.add_argument("--cache-dir")
    so.add_argument("--no-progress", action="store_true")
    so.add_argument("--out", required=True, help="the soup checkpoint (.pt, with its .json sidecar)")
    so.set_defaults(func=_cmd_soup)

    sc = sub.add_parser("score", help="score TuSimple-format predictions from any source against cases' GT")
    sc.add_argument("--pred", required=True, help="TuSimple JSON lines (raw_file, lanes, h_samples)")
    sc.add_argument("--gt", nargs="+", required=True, help="case folders with GT")
    sc.add_argument("--out", help="write the scores as JSON")
    sc.add_argument("--ignore-run-time", action="store_true", help="do not apply the official rule that a frame over 200 ms scores 0")
    sc.set_defaults(func=_cmd_score)

    lo = sub.add_parser("localize", help="rank nodes by what reduced precision does to the lanes; the minimal set to keep in fp32")
    lo.add_argument("--checkpoint", required=True)
    lo.add_argument("--case", help="the case to localize on (not with --capture)")
    lo.add_argument("--capture", help="layer tensors from a target: trtexec --saveAllDebugTensors folder, a capture folder with "
                                      "debug/, or Polygraphy --onnx-outputs mark all JSON (docs/target.md)")
    lo.add_argument("--inputs", help="with --capture: the export folder (default: found beside the capture)")
    lo.add_argument("--batch", help="with --capture: the exported batch the tensors are of (default: the folder's name or the first)")
    lo.add_argument("--no-search", dest="search", action="store_false", help="with --capture: skip the keep-set search")
    lo.add_argument("--runner", default="cpu-fp16", help="cpu-fp16 (real fp16, every node; default) or ort-fp16 (the fp16 ONNX graph, fp32 activations: weight rounding only)")
    lo.add_argument("--pipeline", default="vehicle")
    lo.add_argument("--frames", type=int, default=16, help="frames sampled for the node ranking and the search (the set is verified on all)")
    lo.add_argument("--tolerance-px", "--tolerance", type=float, default=1.0,
                    help="max lane difference (px) from torch fp32 a keep-set must reach (default 1.0)")
    lo.add_argument("--max-keep", type=int, default=8, help="largest keep-set worth suggesting; a larger minimal set exits 1")
    lo.add_argument("--cache-dir")
    lo.add_argument("--out", required=True, help="folder for localize.json and layers.png")
    lo.set_defaults(func=_cmd_localize)

    from .training.zoo import ZOO_EPOCHS, ZOO_LR

    zo = sub.add_parser("zoo", help="every recipe applied to a trained reference, cached and resumable")
    zo.add_argument("--cases", nargs="+", required=True, help="training cases")
    zo.add_argument("--eval-cases", nargs="+", help="held-out cases (accuracy in each sidecar)")
    zo.add_argument("--select-cases", nargs="+", help="cases wise-ft and soup-greedy choose on (the validation suite)")
    zo.add_argument("--unlabelled-cases", nargs="+", help="recordings without labels the UAT recipes learn from (the unlabelled suite)")
    zo.add_argument("--from", dest="parent", required=True, help="the ERM reference every recipe fine-tunes")
    zo.add_argument("--out", required=True, help="folder for <method>.pt/.json and zoo.json")
    zo.add_argument("--methods", help="comma-separated subset (default: every recipe)")
    zo.add_argument("--epochs", type=int, default=ZOO_EPOCHS, help=f"fine-tuning epochs per recipe (default {ZOO_EPOCHS})")
    zo.add_argument("--lr", type=float, default=ZOO_LR, help=f"peak learning rate (default {ZOO_LR})")
    zo.add_argument("--seeds", type=int, default=1, help="train every recipe with seeds 0..N-1 (<method>.pt, <method>-s1.pt ...); "
                                                         "a method-level ranking needs >= 3")
    zo.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    zo.add_argument("--no-progress", action="store_true")
    zo.set_defaults(func=_cmd_zoo)

    me = sub.add_parser("methods", help="training recipes")
    mesub = me.add_subparsers(dest="methods_command", required=True)
    ml = mesub.add_parser("list", help="every recipe: name, what it changes, its settings and source")
    ml.set_defaults(func=_cmd_methods_list)

    bl = sub.add_parser("baseline", help="store a finished replay's metrics (per case x runner x pipeline) as a gate baseline")
    bl.add_argument("--run", required=True, help="a finished replay folder (summary.json)")
    bl.add_argument("--out", required=True, help="the baseline file, e.g. reports/baselines/NAME.json")
    bl.add_argument("--name", help="the baseline's name (default: the file's stem)")
    bl.set_defaults(func=_cmd_baseline)

    ga = sub.add_parser("gate", help="check a candidate against a baseline: exit 0 pass, 1 regression, 2 bad input, 3 cannot compare")
    ga.add_argument("--baseline", required=True, help="a file written by `parity baseline`")
    ga.add_argument("--run", help="a finished replay to check (else the candidate is replayed with the options below)")
    ga.add_argument("--config", help="TOML with [gate.rules.<metric>] tables (defaults: parity/decisions/gate.toml)")
    ga.add_argument("--cases", nargs="+", help="default: the baseline's cases")
    ga.add_argument("--checkpoint", help="the candidate checkpoint (default: the baseline's)")
    ga.add_argument("--runners", help="comma-separated (default: the baseline's runners)")
    ga.add_argument("--pipeline", help="comma-separated names or pipeline files (default: the baseline's pipelines)")
    ga.add_argument("--engine", action="append", help="a prebuilt TensorRT engine to gate in place of a baseline runner")
    ga.add_argument("--engine-as", help="the baseline runner the engine is compared as (default: the baseline's only trt-* runner)")
    _outputs_option(ga)
    ga.add_argument("--as", dest="rename", action="append", metavar="CANDIDATE=BASELINE",
                    help="compare a candidate runner or pipeline under a baseline name (repeatable)")
    ga.add_argument("--out", help="output folder (default reports/gate-<run-id>): gate.json, junit.xml, gate.md, run/")
    ga.add_argument("--batch-size", type=int, default=16)
    ga.add_argument("--cache-dir")
    ga.add_argument("--no-progress", action="store_true")
    ga.add_argument("--no-report", dest="report", action="store_false", help="do not write report.html")
    ga.add_argument("--overwrite", action="store_true", help="replace a different gate found in --out (its own files only)")
    ga.set_defaults(func=_cmd_gate)

    rp = sub.add_parser("report", help="one self-contained HTML page for a replay, sweep, rank or gate folder")
    rp.add_argument("folder", help="a finished replay, sweep, rank or gate folder")
    rp.add_argument("--out", help="the HTML file (default: FOLDER/report.html)")
    rp.set_defaults(func=_cmd_report)

    rn = sub.add_parser("runners", help="list runners and whether this machine can run them")
    rn.set_defaults(func=_cmd_runners)
    _everywhere(p, "--max-frame-pixels", type=int, default=argparse.SUPPRESS, help="largest frame a case may declare, width x height pixels (default 8192 x 8192)")
    return p


class Terminated(BaseException):
    """SIGTERM: a scheduler or a person stopping the run (not an error of the input)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _log_internal_error(exc: BaseException) -> str:
    """Write the traceback of an unexpected error to a log file and return its path."""
    import tempfile
    import traceback
    from datetime import datetime

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for root in (os.environ.get("PARITY_CACHE_DIR"), str(Path.home() / ".cache" / "parity"), tempfile.gettempdir()):
        if not root:
            continue
        try:
            path = Path(root) / "logs" / f"error-{stamp}-{os.getpid()}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"parity {' '.join(sys.argv[1:])}\n\n{text}")
            return str(path)
        except OSError:
            continue
    return "(no writable log folder; run with -v)"


def main(argv: list[str] | None = None) -> int:
    import errno
    import signal

    args = build_parser().parse_args(argv)
    cap = getattr(args, "max_frame_pixels", None)
    if cap is not None:
        if cap < 1:
            print(f"parity: error: --max-frame-pixels must be at least 1, got {cap}", file=sys.stderr)
            return 2
        os.environ["PARITY_MAX_FRAME_PIXELS"] = str(cap)  # workers (pool, Ray) inherit it
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="parity: %(levelname)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        return args.func(args)
    except ParityError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"parity: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("parity: interrupted; an unfinished run folder is resumed by running the same command again", file=sys.stderr)
        return 130
    except Terminated:
        print("parity: terminated (SIGTERM); an unfinished run folder is resumed by running the same command again", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `parity runners | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 0
    except OSError as exc:  # the machine, not the input: a full disk, a folder that cannot be written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"parity: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2 if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR) else 1
    except Exception as exc:  # a bug of ours: say so, keep the traceback for the report, never show it as the answer
        log = _log_internal_error(exc)
        print(f"parity: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"parity: this is a bug in parity, not in your input; the traceback is in {log}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
