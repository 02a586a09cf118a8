"""What a CI system reads from a gate: JUnit XML (one test case per case x runner x pipeline x rule)
and a Markdown summary for a pull-request comment. Both are made from the gate document alone.

The JUnit layout is the one Jenkins, GitLab and GitHub test reporters read (the Ant/Jenkins
format; tests/junit.xsd is the schema the tests validate it against): one <testsuite> per case
(and one for the run-level figures), a <testcase> per runner x pipeline x rule whose classname is
`parity.gate.<case>.<runner>.<pipeline>`, a <failure> for a regression and an <error> for what could
not be compared, each message with the measured value, the allowed value and the baseline.
"""
from __future__ import annotations

import math
import socket
import xml.etree.ElementTree as ET
from datetime import datetime

from .baseline import GATED, OVERALL

MAX_ROWS = 60  # per Markdown table; the rest is in gate.json


def _suite_name(case: str) -> str:
    return "overall (all cases)" if case == OVERALL else case


def junit_xml(doc: dict) -> str:
    checks = doc["checks"]
    stamp = datetime.fromisoformat(doc["started"]).strftime("%Y-%m-%dT%H:%M:%S")
    root = ET.Element("testsuites", name="parity gate", tests=str(len(checks)),
                      failures=str(doc["counts"]["fail"]), errors=str(doc["counts"]["error"]), time="0")
    by_case: dict[str, list] = {}
    for c in checks:
        by_case.setdefault(c["case"], []).append(c)
    host = socket.gethostname() or "localhost"
    for i, (case, items) in enumerate(sorted(by_case.items(), key=lambda kv: (kv[0] == OVERALL, kv[0]))):
        suite = ET.SubElement(root, "testsuite", name=f"parity gate: {_suite_name(case)}", tests=str(len(items)),
                              failures=str(sum(c["status"] == "fail" for c in items)), errors=str(sum(c["status"] == "error" for c in items)),
                              skipped="0", time="0", timestamp=stamp, hostname=host, id=str(i))
        props = ET.SubElement(suite, "properties")
        for name, value in (("baseline", doc["baseline"]["path"]), ("candidate_run", doc["candidate"]["run"]),
                            ("verdict", doc["verdict"]), ("gate_git_sha", str(doc.get("gate_git_sha")))):
            ET.SubElement(props, "property", name=name, value=value)
        for c in items:
            case_name = "overall" if c["case"] == OVERALL else c["case"]
            tc = ET.SubElement(suite, "testcase", name=c["rule"], classname=f"parity.gate.{case_name}.{c['runner']}.{c['pipeline']}", time="0")
            if c["status"] == "pass":
                continue
            tag = "failure" if c["status"] == "fail" else "error"
            kind = "regression" if tag == "failure" else c["rule"]
            el = ET.SubElement(tc, tag, message=_message(c), type=kind)
            el.text = _detail(c)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _message(c: dict) -> str:
    msg = f"{c['rule']} on {c['runner']} / {c['pipeline']}: {c['message']}"
    if c.get("nondeterministic"):
        msg += f" [nondeterministic across machines: {c['nondeterministic']}]"
    return msg


def _detail(c: dict) -> str:
    lines = [f"{k}: {_num(c[k]) if k in ('measured', 'allowed', 'baseline') else c[k]}"
             for k in ("case", "runner", "pipeline", "rule", "measured", "allowed", "baseline", "tolerance", "nondeterministic")
             if c.get(k) is not None]
    return "\n".join(lines)


def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "absent"
    return f"{v:.6g}"


def _table(head: list[str], rows: list[list[str]], more: int) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    if more:
        out.append(f"\n... and {more} more in gate.json")
    return out


def markdown(doc: dict) -> str:
    from .gate_verdict import describe_check, groups, reference_moved

    checks = doc["checks"]
    n = doc["counts"]
    word = {"pass": "PASSED", "fail": "FAILED: regression", "error": "FAILED: cannot compare"}[doc["verdict"]]
    bp = doc["baseline"]["provenance"]
    ck = bp.get("checkpoint") or {}
    cp = (doc["candidate"]["provenance"] or {}).get("checkpoint") or {}
    lines = [
        f"## parity gate {word} (exit {doc['exit_code']})",
        "",
        f"**{doc.get('headline', '')}**",
        "",
        f"Baseline `{doc['baseline']['path']}` (checkpoint `{ck.get('name')}` {str(ck.get('sha256'))[:12]}, "
        f"{len(bp.get('cases', {}))} cases); candidate run `{doc['candidate']['run']}` (checkpoint `{cp.get('name')}` "
        f"{str(cp.get('sha256'))[:12]}).",
        f"{len(checks)} checks: {n['pass']} passed, {n['fail']} regressions, {n['error']} could not be compared.",
    ]
    if doc.get("rename"):
        lines.append("Compared as: " + ", ".join(f"`{a}` as `{b}`" for a, b in doc["rename"].items()) + ".")
    lines += ["", "### What differs from the baseline", ""] + ([f"- {p}" for p in doc["differences"]] or
                                                               ["- nothing: same checkpoint, case bytes, pipelines, library versions and machine"])
    moved = reference_moved(checks)
    lines.append(f"- torch fp32 reference: **moved** on {len(moved)} check(s): the model or its inputs changed, not the engine" if moved
                 else "- torch fp32 reference: unchanged within tolerance")
    gs = groups(checks)
    if gs:
        lines += ["", "### Failures by runner x metric family", ""]
        rows = [[g["status"], g["runner"], f"{g['family']} ({g['kind']})", str(g["checks"]), ", ".join(g["pipelines"]),
                 describe_check(g["worst"]).replace("|", "\\|")] for g in gs[:MAX_ROWS]]
        lines += _table(["status", "runner", "family", "checks", "pipelines", "worst"], rows, len(gs) - len(rows))
    overall = {}
    cols = ["accuracy", "added_bend_p99_px", "added_jitter_rms_near", "dx_ref_p99_px", "bend_p99_px", "nonfinite_rate"]
    for c in checks:
        if c["case"] == OVERALL and c["rule"] in cols:
            overall.setdefault((c["runner"], c["pipeline"]), {})[c["rule"]] = c
    if overall:
        lines += ["", "### Overall (all cases): candidate (baseline)", ""]
        rows = []
        for (r, p), cs in sorted(overall.items()):
            cells = [f"{_num(cs[m]['measured'])} ({_num(cs[m]['baseline'])})" + (" **fail**" if cs[m]["status"] == "fail" else "")
                     if m in cs else "-" for m in cols]
            rows.append([r, p] + cells)
        lines += _table(["runner", "pipeline"] + [f"`{m}`" for m in cols], rows, 0)
    lines += ["", "Every check with its measured, allowed and baseline value: `junit.xml`, `gate.json`. "
              "Rules: `parity/decisions/gate.toml` (or `--config`); exit 0 pass, 1 regression, 2 bad input, 3 cannot compare.", ""]
    return "\n".join(lines)
