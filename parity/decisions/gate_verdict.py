"""What a reviewer reads of a gate in ten seconds: one headline, what differs in the candidate's
provenance, whether the torch fp32 reference itself moved, and the failures grouped by runner x
metric family with the worst case of each. Made from the gate document alone (console, gate.md and
the HTML report show the same lines); the per-rule detail stays in junit.xml and gate.json.

Why the reference matters: every deployment delta is measured against torch fp32 on the same
frames. When torch's own results moved (another checkpoint, other case bytes, another vehicle
pipeline), the failures say the model or its inputs changed, not the engine, and the deltas of the
deployed forms against that moved torch are reported apart.
"""
from __future__ import annotations

import math

from ..runners import REFERENCE  # the runner every deployment delta is measured against
from .baseline import FAMILIES, GATED, OVERALL

# Which failure to name first: NaN/Inf outputs make every other metric of those frames absent, so
# they are the cause to state; then the symptoms the seeds name (bend, swing, flicker), then parity.
MAX_GROUP_LINES = 12  # in the log; gate.md and the report list every group
FAMILY_ORDER = ("nonfinite", "added-bend", "added-jitter", "added-flicker", "parity", "drift", "pipeline-gap", "accuracy", "bend", "jitter")
# Where torch fp32 itself moved, its drift from the baseline's lanes is the most direct statement of it.
MOVED_ORDER = ("drift", "pipeline-gap", "accuracy", "bend", "jitter")


def family_of(rule: str) -> str:
    """A metric's family; a fail-closed reason (case-missing, ...) is a family of its own."""
    return GATED[rule].family if rule in GATED else rule


def kind_of(family: str) -> str:
    return FAMILIES[family][0] if family in FAMILIES else "comparison"


def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "absent"
    return f"{v:.4g}"


def _flat(d, prefix="") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(sha) -> str:
    return str(sha)[:12] if sha else "?"


def provenance_lines(base: dict, cand: dict) -> list[str]:
    """One line per thing that differs between the baseline's and the candidate's provenance:
    checkpoint, case bytes, pipeline specs, library versions, CPU (and GPU, where runners name one)."""
    lines = []
    bc, cc = base.get("checkpoint") or {}, cand.get("checkpoint") or {}
    if bc.get("sha256") != cc.get("sha256"):
        lines.append(f"model changed: checkpoint {bc.get('name')} {_short(bc.get('sha256'))} -> {cc.get('name')} {_short(cc.get('sha256'))}")
    bcases, ccases = base.get("cases") or {}, cand.get("cases") or {}
    changed = sorted(n for n in bcases if n in ccases and bcases[n].get("sha256") != ccases[n].get("sha256"))
    if changed:
        lines.append(f"inputs changed: {len(changed)} case(s)' bytes differ: {', '.join(changed[:5])}" + (" ..." if len(changed) > 5 else ""))
    missing = sorted(set(bcases) - set(ccases))
    if missing:
        lines.append(f"inputs changed: {len(missing)} baseline case(s) not in the candidate: {', '.join(missing[:5])}")
    for name, spec in sorted((base.get("pipelines") or {}).items()):
        other = (cand.get("pipelines") or {}).get(name)
        if other is None:
            continue
        a, b = _flat(spec), _flat(other)
        diff = [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            lines.append(f"inputs changed: pipeline {name} differs: " + "; ".join(diff[:4]) + (" ..." if len(diff) > 4 else ""))
    bv, cv = base.get("versions") or {}, cand.get("versions") or {}
    vdiff = [f"{k} {bv.get(k)} -> {cv.get(k)}" for k in sorted(set(bv) | set(cv)) if bv.get(k) != cv.get(k)]
    if vdiff:
        lines.append("library versions differ: " + ", ".join(vdiff))
    bm, cm = base.get("machine") or {}, cand.get("machine") or {}
    if (bm.get("cpu"), bm.get("cpus")) != (cm.get("cpu"), cm.get("cpus")):
        lines.append(f"machine differs: CPU {bm.get('cpu')} ({bm.get('cpus')} CPUs) -> {cm.get('cpu')} ({cm.get('cpus')} CPUs); "
                     "tolerances marked nondeterministic absorb the measured spread (docs/ci.md)")
    bg, cg = _gpus(base), _gpus(cand)
    if bg != cg and (bg or cg):
        lines.append(f"GPU differs: {', '.join(bg) or 'none'} -> {', '.join(cg) or 'none'}")
    return lines


def _gpus(prov: dict) -> list[str]:
    return sorted({str(r.get("gpu")) for r in (prov.get("runners") or {}).values() if isinstance(r, dict) and r.get("gpu")})


def _excess(c: dict) -> float:
    """How far past its tolerance a failed check is, in tolerances (inf for an absent or limit-only value)."""
    m, a, b = c.get("measured"), c.get("allowed"), c.get("baseline")
    if c["status"] != "fail" or m is None or a is None or any(isinstance(v, float) and math.isnan(v) for v in (m, a)):
        return math.inf
    room = abs(a - b) if b is not None and not math.isnan(b) else 0.0
    return abs(m - a) / room if room > 0 else math.inf


def groups(checks: list[dict]) -> list[dict]:
    """Checks that did not pass, grouped by runner x family: count, pipelines, cases and the worst check."""
    out: dict[tuple, dict] = {}
    for c in checks:
        if c["status"] == "pass":
            continue
        fam = family_of(c["rule"])
        g = out.setdefault((c["runner"], fam, c["status"]), {"runner": c["runner"], "family": fam, "kind": kind_of(fam),
                                                             "status": c["status"], "checks": 0, "pipelines": set(), "worst": c})
        g["checks"] += 1
        g["pipelines"].add(c["pipeline"])
        if (_excess(c), c["case"] == OVERALL) > (_excess(g["worst"]), g["worst"]["case"] == OVERALL):
            g["worst"] = c
    rank = {"fail": 0, "error": 1}
    ordered = sorted(out.values(), key=lambda g: (rank[g["status"]], g["runner"] == REFERENCE and g["kind"] == "deployment",
                                                  g["kind"] != "deployment", _family_rank(g["family"]), -_excess(g["worst"]),
                                                  g["runner"], g["family"]))
    for g in ordered:
        g["pipelines"] = sorted(g["pipelines"])
    return ordered


def _family_rank(family: str) -> int:
    if family in FAMILY_ORDER:
        return FAMILY_ORDER.index(family)
    return len(FAMILY_ORDER) + (family == "incomplete-overall")  # a consequence of another reason: named last


def _moved_rank(family: str) -> int:
    return MOVED_ORDER.index(family) if family in MOVED_ORDER else len(MOVED_ORDER)


def reference_moved(checks: list[dict]) -> list[dict]:
    """The failed checks of torch fp32 itself (accuracy, bend, jitter vs GT, the pipeline gap): the
    model or its inputs changed. Torch's own deployment deltas are zero by construction."""
    return [c for c in checks if c["runner"] == REFERENCE and c["status"] == "fail" and kind_of(family_of(c["rule"])) != "deployment"]


def describe_check(c: dict) -> str:
    where = "all cases" if c["case"] == OVERALL else c["case"]
    fam = family_of(c["rule"])
    if c["status"] == "error":
        return f"{c['runner']} on {c['pipeline']}: {c['rule']} at {where}: {c['message']}"
    op = ">=" if GATED.get(c["rule"]) and GATED[c["rule"]].higher_is_better else "<="
    what = FAMILIES[fam][1] if fam in FAMILIES else fam
    return (f"{c['runner']} on {c['pipeline']}: {c['rule']} {_num(c.get('measured'))}, allowed {op} {_num(c.get('allowed'))} "
            f"(baseline {_num(c.get('baseline'))}) at {where} [{what}]")


def _model_note(doc: dict) -> str:
    """'model changed (checkpoint a -> b), ' when the candidate's checkpoint is not the baseline's."""
    bc = (doc["baseline"]["provenance"] or {}).get("checkpoint") or {}
    cc = (doc["candidate"]["provenance"] or {}).get("checkpoint") or {}
    if bc.get("sha256") == cc.get("sha256"):
        return ""
    return f"model changed (checkpoint {bc.get('name')} {_short(bc.get('sha256'))} -> {cc.get('name')} {_short(cc.get('sha256'))}); "


def headline(doc: dict) -> str:
    """The first line: the verdict, whether the model changed, and what failed first (a runner and
    the delta it failed on)."""
    checks, code = doc["checks"], doc["exit_code"]
    gs = groups(checks)
    moved = reference_moved(checks)
    note = _model_note(doc)
    if doc["verdict"] == "pass":
        return f"gate PASS: {note}{len(checks)} checks passed (exit {code})"
    if doc["verdict"] == "error":
        g = gs[0]
        return f"gate FAIL (cannot compare): {note}{describe_check(g['worst'])}; {len(gs) - 1} more group(s) (exit {code})"
    if moved:
        worst = min(moved, key=lambda c: (_moved_rank(family_of(c["rule"])), -_excess(c)))
        dep = [g for g in gs if g["status"] == "fail" and g["kind"] == "deployment"]
        tail = (f"deployment deltas vs that torch: {len(dep)} failing group(s), first {describe_check(dep[0]['worst'])}" if dep
                else "deployment deltas vs that torch: all pass")
        return (f"gate FAIL (the model or its inputs changed, not the engine): {note}torch fp32 moved: {describe_check(worst)}; "
                f"{tail} (exit {code})")
    first = next(g for g in gs if g["status"] == "fail")
    more = sum(g["status"] == "fail" for g in gs) - 1
    label = "engine regression" if first["kind"] == "deployment" else "regression"
    unchanged = "torch fp32 unchanged; " if note else ""
    return (f"gate FAIL ({label}): {note}{unchanged}{describe_check(first['worst'])}"
            + (f"; {more} more failing group(s)" if more else "") + f" (exit {code})")


def summary_lines(doc: dict) -> list[str]:
    """The lines after the headline: provenance differences, the torch reference, the groups."""
    lines = [f"provenance vs the baseline: {p}" for p in doc["differences"]] or \
        ["provenance vs the baseline: same checkpoint, case bytes, pipelines, library versions and machine"]
    moved = reference_moved(doc["checks"])
    if moved:
        lines.append(f"torch fp32 reference: MOVED on {len(moved)} check(s): the model or its inputs changed, not the engine; "
                     "the deployment deltas below are against the moved torch")
    else:
        lines.append("torch fp32 reference: unchanged within tolerance: the deployed forms are judged against the same reference")
    gs = groups(doc["checks"])
    if gs:
        lines.append("failures by runner x metric family (worst case of each):")
        for g in gs[:MAX_GROUP_LINES]:
            word = "FAIL " if g["status"] == "fail" else "ERROR"
            lines.append(f"  {word} {g['runner']:<10} {g['family']:<13} ({g['kind']}) {g['checks']:>4} check(s) on {','.join(g['pipelines'])}; "
                         f"worst: {describe_check(g['worst'])}")
        if len(gs) > MAX_GROUP_LINES:
            lines.append(f"  ... and {len(gs) - MAX_GROUP_LINES} more group(s) in gate.md and gate.json")
    n = doc["counts"]
    lines.append(f"{len(doc['checks'])} checks: {n['pass']} passed, {n['fail']} regressions, {n['error']} could not be compared")
    return lines
