"""reports/bench/summary.md: every benchmark's targets, measured values and pass/fail in one table.
Run last by `make bench`; reads the reports/bench/*.json the other benchmarks wrote."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["cross_machine", "scale", "ufld_cost", "polygraphy_compare", "perturb_cost", "full_sweep", "rank_time", "rank_memory", "replay_memory", "metrics_speed"]


def main() -> None:
    bench = ROOT / "reports" / "bench"
    docs = {p.stem: json.loads(p.read_text()) for p in bench.glob("*.json")}
    rows = []
    for name in sorted(docs, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        for t in docs[name].get("targets", []):
            met = {True: "pass", False: "**FAIL**", None: "-"}[t.get("met")]
            value = t["measured"]
            value = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
            rows.append(f"| {t['name']} | {value} {t['unit']} | {t['target']} | {met} | [{name}]({name}.md) | {docs[name].get('git', '?')} |")
    from parity.provenance import git_sha

    md = ["# Benchmarks: targets and results", "",
          f"Written by `make bench` ({datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, git {str(git_sha())[:12]}). Each figure is "
          "measured side by side in one run and stated as a ratio where it compares two things; details in each file; `commit`: "
          "the commit the figure was measured at (`make bench BENCH=...` re-runs some and keeps the others).", "",
          "| benchmark | measured | target | result | details | commit |", "|---|---:|---|---|---|---|", *rows, ""]
    (bench / "summary.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
