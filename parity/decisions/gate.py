"""`parity gate`: a candidate (a new engine, checkpoint or pipeline) against a stored baseline, with
rules from a TOML file, failing closed.

Every baseline entry (case x runner x pipeline, and each runner x pipeline overall) is checked
against the candidate's, metric by metric, with the tolerance of its scope (parity/decisions/gate.toml).
Whatever keeps the two from being compared fails with its own reason instead of passing: a case
the candidate lacks or failed on, a case whose bytes changed, a runner that did not run, fewer
frames, a candidate entry the baseline has no value for, a value that is absent (NaN) where the
baseline has one. Exit codes: 0 every check passed, 1 a regression (a rule failed), 3 nothing
regressed but something could not be compared; bad input or usage is 2, as everywhere.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import atomic
from ..errors import UsageError
from ..provenance import git_sha, sha256_file, sha256_json, source_hash
from ..runs.folder import RunFolder
from .baseline import FAMILIES, GATED, ONLY_ON, OVERALL, REQUIRED_FAMILIES, RunView, load_baseline, read_replay

DEFAULT_RULES_FILE = Path(__file__).with_name("gate.toml")
SCOPES = ("case", "overall")
PASS, FAIL, ERROR = "pass", "fail", "error"
EXIT = {PASS: 0, FAIL: 1, ERROR: 3}
# The fail-closed reasons, each a rule name of its own in the outputs.
REASONS = {
    "case-missing": "the baseline's case is not in the candidate run",
    "case-error": "the case failed in the candidate run",
    "case-bytes-changed": "the case's content hash differs from the baseline's: the numbers would mean something else",
    "fewer-frames": "the candidate scored fewer frames than the baseline",
    "runner-did-not-run": "the baseline has this runner x pipeline, the candidate does not",
    "baseline-entry-missing": "the candidate has a case x runner x pipeline the baseline has no values for",
    "incomplete-overall": "some case could not be compared, so the run-level figures are over other cases",
}


@dataclass(frozen=True)
class Tolerance:
    abs: float = 0.0
    rel: float = 0.0
    limit: float | None = None  # `max` (lower is better) or `min` (higher is better)

    @property
    def relative_to_baseline(self) -> bool:
        return self.limit is None or self.abs > 0 or self.rel > 0


@dataclass(frozen=True)
class Rule:
    metric: str
    higher_is_better: bool
    scopes: dict  # scope -> Tolerance
    nondeterministic: str | None = None

    @property
    def family(self) -> str:
        return GATED[self.metric].family

    def allowed(self, scope: str, baseline: float) -> float:
        """The worst value that still passes, in the metric's own direction."""
        t = self.scopes[scope]
        sign = -1.0 if self.higher_is_better else 1.0
        if t.relative_to_baseline and math.isfinite(baseline):
            bound = baseline + sign * max(t.abs, t.rel * abs(baseline))
            if t.limit is not None:
                bound = max(bound, t.limit) if self.higher_is_better else min(bound, t.limit)
            return bound
        return t.limit if t.limit is not None else float("nan")

    def describe(self, scope: str) -> str:
        t = self.scopes[scope]
        parts = [f"abs {t.abs:g}"] if t.abs else []
        parts += [f"rel {t.rel:g}"] if t.rel else []
        parts += [f"{'min' if self.higher_is_better else 'max'} {t.limit:g}"] if t.limit is not None else []
        return ", ".join(parts) or "no worse than the baseline"


REL_MAX = 10.0  # a relative tolerance beyond 10x the baseline lets anything pass


def _tolerance(src: str, metric: str, scope: str, table, higher: bool) -> Tolerance:
    where = f"{src}: [gate.rules.{metric}] {scope}"
    upper = GATED[metric].upper
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table like {{ abs = 0.01 }}, got {table!r}")
    bound = "min" if higher else "max"
    unknown = sorted(set(table) - {"abs", "rel", bound})
    if unknown:
        wrong = " (this metric is higher-is-better: use min)" if "max" in unknown and higher else (
            " (this metric is lower-is-better: use max)" if "min" in unknown and not higher else "")
        raise UsageError(f"{where}: unknown key {unknown[0]!r}{wrong}; use abs, rel, {bound}")
    vals = {}
    for k, v in table.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UsageError(f"{where}.{k} must be a finite number, got {v!r}")
        hi = REL_MAX if k == "rel" else upper
        if not 0 <= v <= hi:
            raise UsageError(f"{where}.{k} = {v!r} is outside [0, {hi:g}] (the metric's range{' in ' + GATED[metric].unit if GATED[metric].unit and k != 'rel' else ''})")
        vals[k] = float(v)
    return Tolerance(vals.get("abs", 0.0), vals.get("rel", 0.0), vals.get(bound))


def _parse_rules(src: str, section, rules: dict) -> None:
    if not isinstance(section, dict):
        raise UsageError(f"{src}: [gate.rules] must be a table of metric tables")
    for metric, spec in section.items():
        if metric not in GATED:
            from difflib import get_close_matches

            near = get_close_matches(metric, GATED, n=1)
            raise UsageError(f"{src}: [gate.rules.{metric}] is not a gated metric" + (f" (did you mean {near[0]!r}?)" if near else "")
                             + f"; metrics: {', '.join(GATED)}")
        if not isinstance(spec, dict):
            raise UsageError(f"{src}: [gate.rules.{metric}] must be a table")
        unknown = sorted(set(spec) - {"case", "overall", "nondeterministic", "enabled"})
        if unknown:
            raise UsageError(f"{src}: [gate.rules.{metric}] unknown key {unknown[0]!r}; use case, overall, nondeterministic, enabled")
        if spec.get("enabled", True) is False:
            rules.pop(metric, None)
            continue
        if not isinstance(spec.get("enabled", True), bool):
            raise UsageError(f"{src}: [gate.rules.{metric}] enabled must be true or false")
        note = spec.get("nondeterministic")
        if note is not None and not isinstance(note, str):
            raise UsageError(f"{src}: [gate.rules.{metric}] nondeterministic must be a string (why the tolerance)")
        higher = GATED[metric].higher_is_better
        scopes = {s: _tolerance(src, metric, s, spec[s], higher) for s in SCOPES if s in spec}
        if not scopes:
            raise UsageError(f"{src}: [gate.rules.{metric}] needs a `case` or an `overall` tolerance (or enabled = false)")
        rules[metric] = Rule(metric, higher, scopes, note)


def load_rules(path: str | None = None) -> dict[str, Rule]:
    """The packaged rules, with each [gate.rules.<metric>] table of `path` replacing that metric's."""
    rules: dict[str, Rule] = {}
    _parse_rules(str(DEFAULT_RULES_FILE), tomllib.loads(DEFAULT_RULES_FILE.read_text())["gate"]["rules"], rules)
    if path:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not valid TOML: {exc}") from None
        gate = doc.get("gate")
        if not isinstance(gate, dict) or "rules" not in gate:
            raise UsageError(f"{path}: no [gate.rules.<metric>] tables")
        _parse_rules(str(path), gate["rules"], rules)
    if not rules:
        raise UsageError(f"{path}: every rule is disabled; a gate with no rule passes anything")
    missing = [f for f in REQUIRED_FAMILIES if not any(r.family == f for r in rules.values())]
    if missing:
        f = missing[0]
        names = ", ".join(m for m, g in GATED.items() if g.family == f)
        raise UsageError(f"{path}: leaves the required metric family {f!r} ({FAMILIES[f][1]}) with no rule; "
                         f"keep at least one of {names} (an engine gate that does not check it passes any engine)")
    return rules


@dataclass
class Check:
    """One JUnit test case: a rule (or a fail-closed reason) on one case x runner x pipeline."""

    scope: str  # case | overall
    case: str
    runner: str
    pipeline: str
    rule: str
    status: str  # pass | fail | error
    message: str
    measured: float | None = None
    allowed: float | None = None
    baseline: float | None = None
    tolerance: str | None = None
    nondeterministic: str | None = None


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "absent"
    return f"{v:.6g}"


def _check_value(rule: Rule, scope, case, runner, pipeline, measured: float, base: float, labelled: bool = True) -> Check:
    op = ">=" if rule.higher_is_better else "<="
    kw = dict(scope=scope, case=case, runner=runner, pipeline=pipeline, rule=rule.metric, tolerance=rule.describe(scope),
              nondeterministic=rule.nondeterministic, measured=measured, baseline=base)
    needs_base = rule.scopes[scope].relative_to_baseline and rule.scopes[scope].limit is None
    if math.isnan(measured) and math.isnan(base) and GATED[rule.metric].optional:
        return Check(status=PASS, message=f"not applicable: {GATED[rule.metric].optional}", **kw)
    if math.isnan(base) and needs_base:
        if math.isnan(measured) and GATED[rule.metric].needs_gt and not labelled:
            return Check(status=PASS, message="not applicable: no labelled frame to score against GT", **kw)
        if math.isnan(measured):
            return Check(status=ERROR, message="absent in both the baseline and the candidate: a required check that was never made", **kw)
        return Check(status=ERROR, message=f"measured {_fmt(measured)}, but the baseline has no value to compare with", **kw)
    allowed = rule.allowed(scope, base)
    kw["allowed"] = allowed
    if math.isnan(measured):
        return Check(status=FAIL, message=f"absent (NaN) in the candidate; baseline {_fmt(base)}, allowed {op} {_fmt(allowed)}", **kw)
    ok = measured >= allowed if rule.higher_is_better else measured <= allowed
    msg = f"measured {_fmt(measured)}, allowed {op} {_fmt(allowed)} ({rule.describe(scope)}), baseline {_fmt(base)}"
    return Check(status=PASS if ok else FAIL, message=msg, **kw)


def compare(base: RunView, cand: RunView, rules: dict[str, Rule], rename: dict[str, str] | None = None) -> list[Check]:
    """Every check of the candidate against the baseline (see the module doc)."""
    rename = rename or {}
    if base.lanes is not None and cand.drift_worst is None:
        cand.drift_worst = _attach_drift(base, cand, Path(cand.source), rename)
    entries, source = {}, {}
    for (c, r, p), v in cand.entries.items():
        key = (c, rename.get(r, r), rename.get(p, p))
        if key in entries:  # --as OLD=NAME while the candidate has its own NAME: one would silently replace the other
            raise UsageError(f"--as: the candidate's {source[key][1]}/{source[key][2]} and {r}/{p} would both be compared as "
                             f"{key[1]}/{key[2]} (case {c}); rename one of them to a name the candidate does not use")
        entries[key], source[key] = v, (c, r, p)
    checks: list[Check] = []
    by_case: dict[str, list] = {}
    for key in base.entries:
        by_case.setdefault(key[0], []).append(key)
    not_comparable = set()

    def fail_closed(keys, reason, detail, scope="case"):
        for c, r, p in keys:
            checks.append(Check(scope, c, r, p, reason, ERROR, f"{REASONS[reason]}: {detail}"))

    for case, keys in sorted((k, v) for k, v in by_case.items() if k != OVERALL):
        b = base.cases.get(case, {})
        if case in cand.errors:
            fail_closed(keys, "case-error", cand.errors[case])
        elif case not in cand.cases:
            fail_closed(keys, "case-missing", f"{case} (the candidate has {len(cand.cases)} cases)")
        elif b.get("sha256") != cand.cases[case]["sha256"]:
            fail_closed(keys, "case-bytes-changed", f"baseline {str(b.get('sha256'))[:12]}, candidate {cand.cases[case]['sha256'][:12]}")
        elif cand.cases[case]["frames"] < b.get("frames", 0):
            fail_closed(keys, "fewer-frames", f"{cand.cases[case]['frames']} frames, the baseline {b['frames']}")
        else:
            labelled = b.get("labelled_frames", 1) > 0
            for key in sorted(keys):
                checks.extend(_entry_checks(rules, "case", key, base.entries[key], entries.get(key), labelled))
            continue
        not_comparable.add(case)
    extra_cases = sorted(set(cand.cases) - set(base.cases))
    for key in sorted(k for k in entries if k not in base.entries):
        c, r, p = key
        if c in not_comparable:
            continue
        detail = f"{c} is not a baseline case" if c in extra_cases else f"{r} on {p}" + (" (overall)" if c == OVERALL else "")
        fail_closed([key], "baseline-entry-missing", detail, "overall" if c == OVERALL else "case")
    overall = sorted(by_case.get(OVERALL, []))
    if not_comparable or extra_cases:
        fail_closed(overall, "incomplete-overall", f"{len(not_comparable)} baseline case(s) not comparable, {len(extra_cases)} extra",
                    "overall")
    else:
        labelled = any(c.get("labelled_frames", 1) > 0 for c in base.cases.values())
        for key in overall:
            checks.extend(_entry_checks(rules, "overall", key, base.entries[key], entries.get(key), labelled))
    return checks


def _entry_checks(rules, scope, key, b: dict, c: dict | None, labelled: bool) -> list[Check]:
    case, runner, pipeline = key
    if c is None:
        return [Check(scope, case, runner, pipeline, "runner-did-not-run", ERROR, f"{REASONS['runner-did-not-run']}: {runner} on {pipeline}")]
    if c["frames"] < b["frames"]:
        return [Check(scope, case, runner, pipeline, "fewer-frames", ERROR,
                      f"{REASONS['fewer-frames']}: {c['frames']} frames, the baseline {b['frames']}")]
    return [_check_value(rule, scope, case, runner, pipeline, c[m], b[m], labelled) for m, rule in rules.items()
            if scope in rule.scopes and ONLY_ON.get(m, pipeline) == pipeline]


def verdict(checks: list[Check]) -> tuple[str, int]:
    """('pass' | 'fail' | 'error', exit code): a regression outranks an incomparable entry."""
    statuses = {c.status for c in checks}
    status = FAIL if FAIL in statuses else ERROR if ERROR in statuses else PASS
    return status, EXIT[status]


@dataclass
class GateConfig:
    baseline: str
    out: str | None = None
    run: str | None = None  # a finished replay; else the candidate is replayed here
    config: str | None = None
    cases: list[str] | None = None
    checkpoint: str | None = None
    runners: str | None = None
    pipelines: str | None = None
    engines: list[str] = field(default_factory=list)
    engine_as: str | None = None
    outputs: list[str] = field(default_factory=list)  # captures, replayed as runners (parity.runners.captures)
    rename: list[str] = field(default_factory=list)  # NEW=OLD: a candidate runner/pipeline compared as the baseline's OLD
    overwrite: bool = False
    batch_size: int = 16
    cache_dir: str | None = None
    progress: bool = True
    argv: list[str] = field(default_factory=list)


def parse_rename(specs: list[str]) -> dict[str, str]:
    out = {}
    for s in specs:
        new, sep, old = s.partition("=")
        if not sep or not new or not old:
            raise UsageError(f"--as expects CANDIDATE=BASELINE (a runner or pipeline name), got {s!r}")
        if new in out and out[new] != old:
            raise UsageError(f"--as {s}: {new!r} is already compared as {out[new]!r}")
        twin = next((n for n, o in out.items() if o == old and n != new), None)
        if twin is not None:
            raise UsageError(f"--as {s}: {twin!r} is already compared as {old!r}; one baseline name takes one candidate")
        out[new] = old
    return out


def gate(cfg: GateConfig):
    """Compare (replaying the candidate first unless --run is given); write gate.json, junit.xml,
    gate.md. Returns (out folder, gate document, exit code)."""
    from ..runs.inputs import new_run_id
    from .gate_outputs import junit_xml, markdown
    from .gate_verdict import headline, provenance_lines, reference_moved, summary_lines

    started = datetime.now(timezone.utc)
    base = load_baseline(cfg.baseline)
    rules = load_rules(cfg.config)
    rename = parse_rename(cfg.rename)
    out = Path(cfg.out) if cfg.out else Path("reports") / f"gate-{new_run_id()}"
    if cfg.run and (cfg.engines or cfg.checkpoint or cfg.cases or cfg.runners or cfg.pipelines or cfg.outputs):
        raise UsageError("--run compares a finished replay: give either --run or the replay options (--checkpoint, --engine, ...)")
    run_key = sha256_json({"kind": "gate", "baseline": sha256_file(cfg.baseline), "rules": {m: asdict(r) for m, r in rules.items()},
                           "run": str(cfg.run), "cases": cfg.cases, "checkpoint": cfg.checkpoint, "runners": cfg.runners,
                           "pipelines": cfg.pipelines, "engines": cfg.engines, "engine_as": cfg.engine_as, "rename": rename,
                           "outputs": [_capture_key(o) for o in cfg.outputs],
                           "code": source_hash(("decisions/gate.py", "decisions/baseline.py", "decisions/gate_outputs.py",
                                                "decisions/gate_verdict.py", "decisions/baseline_lanes.py"))})
    with RunFolder(out, "gate", run_key, describe={"baseline": str(cfg.baseline)}, replace=cfg.overwrite) as folder:
        if cfg.run:
            run_dir = Path(cfg.run)
        else:
            run_dir = out / "run"
            _replay_candidate(cfg, base, rename, run_dir)
        cand = read_replay(run_dir)
        checks = compare(base, cand, rules, rename)
        status, code = verdict(checks)
        doc = {
            "schema": "parity.gate/1",
            "started": started.isoformat(),
            "finished": datetime.now(timezone.utc).isoformat(),
            "command": cfg.argv,
            "verdict": status,
            "exit_code": code,
            "counts": {s: sum(c.status == s for c in checks) for s in (PASS, FAIL, ERROR)},
            "baseline": {"path": str(cfg.baseline), "provenance": base.provenance},
            "candidate": {"run": str(run_dir), "provenance": cand.provenance},
            "rename": rename,
            "rules": {m: {"higher_is_better": r.higher_is_better, "scopes": {s: asdict(t) for s, t in r.scopes.items()},
                          "nondeterministic": r.nondeterministic} for m, r in rules.items()},
            "gate_git_sha": git_sha(),
            "checks": [asdict(c) for c in checks],
            "drift_worst": cand.drift_worst or [],  # the lane-frames farthest from the baseline's lanes (the report draws them)
            "files": ["gate.json", "junit.xml", "gate.md"],
        }
        # What differs from the baseline, computed once: the summary, gate.md and the report read it.
        doc["differences"] = provenance_lines(base.provenance or {}, cand.provenance or {})
        doc["machine_differs"] = next((d for d in doc["differences"] if d.startswith("machine differs")), None)
        doc["headline"] = headline(doc)
        doc["summary"] = summary_lines(doc)
        doc["reference_moved"] = bool(reference_moved(doc["checks"]))
        atomic.write_text(out / "junit.xml", junit_xml(doc))
        atomic.write_text(out / "gate.md", markdown(doc))
        atomic.write_json(out / "gate.json", doc)
        folder.finish(doc["files"])
    return out, doc, code


def _attach_drift(base: RunView, cand: RunView, run_dir: Path, rename: dict) -> list[dict]:
    """The drift of the candidate's lanes from the baseline's own, into the candidate's entries; the
    lane-frames that moved most."""
    from .baseline_lanes import drift, run_points, worst_lane_frames

    points = run_points(run_dir)
    inverse = {v: k for k, v in rename.items()}  # entries are keyed by the candidate's own names until compare
    for (c, r, p), values in drift(base.lanes, points, rename, OVERALL).items():
        entry = cand.entries.get((c, inverse.get(r, r), inverse.get(p, p)))
        if entry is not None:
            entry.update(values)
    return worst_lane_frames(base.lanes, points, rename)


def _replay_candidate(cfg: GateConfig, base: RunView, rename: dict, run_dir: Path) -> None:
    """Replay what the candidate is: the baseline's cases, checkpoint, runners and pipelines unless
    the options say otherwise; a prebuilt engine stands in for the baseline runner it is compared as."""
    from ..runs.replay import ReplayConfig, replay

    prov = base.provenance
    cases = cfg.cases or [c.get("path") or name for name, c in sorted(base.cases.items())]
    ckpt = cfg.checkpoint or (prov.get("checkpoint") or {}).get("path")
    if not ckpt:
        raise UsageError(f"{cfg.baseline}: names no checkpoint; give --checkpoint")
    runners = cfg.runners.split(",") if cfg.runners else list(base.runners)
    for e in cfg.engines:
        engine_runner = f"trt-engine:{Path(e).name}"
        target = cfg.engine_as or _default_engine_target(base, cfg.baseline)
        rename.setdefault(engine_runner, target)
        runners = [r for r in runners if r != target]
    runners = _live_runners(cfg, base, runners, rename)
    pipelines = cfg.pipelines or ",".join(base.pipelines)
    # The gate owns run/: a replay of other settings left there by an earlier gate is replaced; the same one is resumed.
    replay(ReplayConfig(cases=cases, checkpoint=ckpt, runners=",".join(runners), pipelines=pipelines, out=str(run_dir),
                        batch_size=cfg.batch_size, cache_dir=cfg.cache_dir, progress=cfg.progress, argv=cfg.argv, engines=cfg.engines,
                        outputs=cfg.outputs, overwrite=True))


def _live_runners(cfg: GateConfig, base: RunView, runners: list[str], rename: dict) -> list[str]:
    """The runners to run here: a baseline runner that was a capture comes back only through --outputs."""
    from ..runners.captures import CaptureSpec

    given = {CaptureSpec.parse(o).name for o in cfg.outputs}
    given |= {rename[n] for n in given if n in rename}  # a capture compared as a baseline runner stands in for it
    captured = {r for r, info in (base.provenance.get("runners") or {}).items() if isinstance(info, dict) and info.get("backend") == "capture"}
    missing = sorted(captured & set(runners) - given)
    if missing:
        raise UsageError(f"{cfg.baseline}: runner(s) {', '.join(missing)} were captures on a target; give each with "
                         f"--outputs NAME=CAPTURE (or --runners without them)")
    return [r for r in runners if r not in captured | given]


def _capture_key(spec: str) -> dict:
    """A capture in the gate's key: its options and the content of its files, never its path alone."""
    from ..runners.captures import CaptureSpec, load_capture

    s = CaptureSpec.parse(spec)
    return {**s.to_dict(), "path": None, "inputs": None, "content": load_capture(s.absolute()).content_sha256()}


def _default_engine_target(base: RunView, path) -> str:
    trt = [r for r in base.runners if r.startswith("trt-")]
    if len(trt) == 1:
        return trt[0]
    raise UsageError(f"--engine: say which baseline runner it replaces with --engine-as (baseline {path} has: {', '.join(base.runners)})")
