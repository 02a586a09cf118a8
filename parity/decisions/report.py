"""`parity report DIR`: one self-contained HTML page for a replay, sweep, rank or gate folder.

The verdict and the summary table come first, then the evidence a reviewer needs to believe it:
per-case numbers, the lane's position over time at the near/mid/far rows where jitter is, the
frames with the worst bends drawn over the camera image, sweep curves, the leaderboard with its
intervals and Pareto front, and the provenance. Pictures are PNGs embedded as data URIs and the page
has no script and no external reference, so it opens from disk, offline, in any browser.
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import UsageError
from ..runners import REFERENCE
from ..runs.tables import read_summary
from . import figures

GALLERY = 6  # worst bends drawn on their frames
DIFFERS = 4  # frames where a deployed runner differs most from torch, drawn on their frames
FILMSTRIP = 6  # consecutive frames around the largest frame-to-frame swing a deployed runner adds
GALLERY_PER_CASE = 2  # so one hard case does not fill the gallery

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1320px;padding:16px 24px;color:#1d2330}
h1{font-size:22px;margin:4px 0 2px} h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #d8dce4;padding-bottom:4px}
.meta{color:#5a6275;font-size:12px} .verdict{font-size:18px;font-weight:600;padding:10px 14px;border-radius:6px;margin:12px 0}
.ok{background:#e3f5e6;color:#185c27} .bad{background:#fde4e1;color:#8a1c12} .warn{background:#fff3d6;color:#7a5300}
table{border-collapse:collapse;font-size:12px;margin:6px 0 10px} th,td{border:1px solid #d8dce4;padding:3px 7px;text-align:right}
th{background:#f2f4f8;position:sticky;top:0} td.l,th.l{text-align:left} tr.fail td{background:#fde4e1} tr.error td{background:#fff3d6}
.gallery{display:flex;flex-wrap:wrap;gap:10px} .filmstrip{display:flex;flex-wrap:nowrap;gap:4px;overflow-x:auto} figure{margin:0} figcaption{font-size:11px;color:#5a6275;max-width:640px}
img{max-width:100%;border:1px solid #d8dce4} details{margin:6px 0} pre{font-size:11px;background:#f6f7f9;padding:8px;overflow:auto}
.note{font-size:12px;color:#5a6275;max-width:1000px}
"""


def _e(v) -> str:
    return html.escape(str(v))


def _n(v, fmt=".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def _img(data: bytes, alt: str) -> str:
    mime = "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"
    return f'<img src="data:{mime};base64,{base64.b64encode(data).decode()}" alt="{_e(alt)}">'


def _table(tid: str, head: list[str], rows: list[list[str]], row_class: list[str] | None = None, left: int = 1) -> str:
    """An HTML table; cells are already escaped HTML; the first `left` columns align left."""
    th = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(head))
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>")
    return f'<table id="{tid}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _slug(heading: str) -> str:
    """A section's id: its words joined by hyphens (a screenshot or a link starts there)."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def _page(title: str, subtitle: str, verdict: tuple[str, str], sections: list[tuple[str, str]]) -> str:
    cls, text = verdict
    parts = [f"<h1>{_e(title)}</h1>", f'<div class="meta">{subtitle}</div>', f'<div class="verdict {cls}" id="verdict">{_e(text)}</div>']
    parts += [f'<h2 id="{_slug(h)}">{_e(h)}</h2>\n{body}' for h, body in sections if body]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _provenance(prov: dict) -> str:
    items = []
    for key in ("git_sha", "machine", "versions", "checkpoint", "checkpoints", "runners", "pipelines", "cases"):
        if key in prov and prov[key] is not None:
            items.append(f"<details><summary>{_e(key)}</summary><pre>{_e(json.dumps(prov[key], indent=1, default=str))}</pre></details>")
    return "".join(items)


# ----------------------------------------------------------------------------------------------- replay

REPLAY_COLUMNS = [
    ("acc", "accuracy", ".4f"), ("F1", "f1_50", ".4f"), ("dx mean", "dx_ref_mean_px", ".3f"), ("dx p99", "dx_ref_p99_px", ".3f"),
    ("dx max", "dx_ref_max_px", ".2f"), ("flips", "argmax_flip_rate", ".5f"), ("bend", "bend_mean_px", ".2f"),
    ("bend p99", "bend_p99_px", ".2f"), ("kink %", "kink_rate", ".2%"), ("jit near", "jitter_rms_near", ".3f"),
    ("jit mid", "jitter_rms_mid", ".3f"), ("jit far", "jitter_rms_far", ".3f"), ("osc Hz", "jitter_oscillation_hz_near", ".2f"),
    ("non-finite", "nonfinite_rate", ".3f"),
]
DELTA_COLUMNS = [
    ("bend+ p99", "added_bend_p99_px", ".3f"), ("bend+ mean", "added_bend_mean_px", ".4f"), ("kinks+", "added_kink_rate", ".3%"),
    ("jit+ near", "added_jitter_rms_near", ".4f"), ("jit+ mid", "added_jitter_rms_mid", ".4f"), ("jit+ far", "added_jitter_rms_far", ".4f"),
    ("jit+ p95 near", "added_jitter_p95_near", ".4f"), ("flicker+ Hz", "added_flicker_hz", ".4f"),
]


def _replay_verdict(doc: dict) -> tuple[str, str]:
    n_cases = len(doc["provenance"]["cases"])
    runners = sorted({r["runner"] for r in doc["results"]})
    if doc.get("errors"):
        return "bad", f"FAILED: {len(doc['errors'])} of {n_cases} cases did not run"
    if doc.get("findings"):
        return "bad", f"FINDINGS: {'; '.join(doc['findings'])}"
    return "ok", f"OK: {n_cases} cases x {len(runners)} runners ({', '.join(runners)}), no non-finite output, no failed case"


def _captures_section(doc: dict) -> str:
    """Runners whose outputs came back from a target (`--outputs`): what made them, and the checks only they allow."""
    info = {k: v for k, v in (doc["provenance"].get("runners") or {}).items() if isinstance(v, dict) and v.get("backend") == "capture"}
    if not info:
        return ""
    res = {r["runner"]: r for r in doc["results"]}
    rows = []
    for name, v in info.items():
        eng = (v.get("engine") or {}).get("sha256")
        layers = v.get("layer_precisions") or {}
        r = res.get(name, {})
        rows.append([_e(name), _e(v.get("format")), _e(eng[:12] if eng else "-"), _e(v.get("tensorrt") or "-"), _e(v.get("gpu") or "-"),
                     _e(f"{v.get('precision_claimed') or '-'} (by {v.get('precision_claimed_by')})"),
                     _e(f"{layers['fp16']} of {layers['layers']}" if layers.get("layers") else "-"), _e(v.get("lossy") or "no"),
                     _n(r.get("batch_variance_dx_max_px"), ".3f")])
    findings = [f for f in doc.get("findings", []) if f.startswith("capture ")]
    return (_table("captures", ["runner", "format", "engine sha256", "TensorRT", "GPU", "precision claimed", "fp16 layers", "lossy",
                                "batch spread px"], rows, left=8)
            + "".join(f'<p class="bad">{_e(f)}</p>' for f in findings)
            + '<p class="note">Outputs computed on the target from parity export-inputs tensors, matched to frames by the sha256 of '
              "each input row (docs/target.md); batch spread: the largest lane difference between rows of a batch repeating one frame "
              "(export-inputs --invariance-probe; '-': no probe).</p>")


def replay_sections(folder: Path, doc: dict) -> list[tuple[str, str]]:
    head = ["runner", "pipeline", "frames"] + [c for c, _, _ in REPLAY_COLUMNS]
    rows = [[_e(r["runner"]), _e(r["pipeline"]), str(r["frames"])] + [_n(r.get(k), f) for _, k, f in REPLAY_COLUMNS] for r in doc["results"]]
    labels = "".join(f"<li><b>{_e(r['runner'])}</b>: {_e(r.get('label', ''))}</li>" for r in {r["runner"]: r for r in doc["results"]}.values())
    gaps = "".join(f"<li>pipeline gap ({_e(g['runner'])}, vehicle vs training): mean {_n(g['vehicle_vs_training'].get('mean_px'), '.2f')} px, "
                   f"p99 {_n(g['vehicle_vs_training'].get('p99_px'), '.2f')} px, max {_n(g['vehicle_vs_training'].get('max_px'), '.2f')} px</li>"
                   for g in doc.get("pipeline_gap", []))
    summary = (_table("summary", head, rows, left=2) + f"<ul class=\"note\">{labels}{gaps}</ul>"
               + '<p class="note">acc: TuSimple accuracy, F1: CULane F1 at IoU 0.5 (vs GT); dx and flips: vs torch fp32 on the same '
               "pipeline; bend and jitter vs " + _e(", ".join(sorted({x for r in doc["results"] for x in r.get("bending_jitter_reference", [])})))
               + " (docs/metrics.md).</p>")
    sections = [("Summary", summary)]
    deployed = [r for r in doc["results"] if r["runner"] != REFERENCE]
    if deployed:
        rows = [[_e(r["runner"]), _e(r["pipeline"])] + [_n(r.get(k), f) for _, k, f in DELTA_COLUMNS] for r in deployed]
        deltas = ("Deployment deltas: what each deployed form adds over torch fp32 (same frames and pipeline, GT not needed)",
                  _table("deltas", ["runner", "pipeline"] + [c for c, _, _ in DELTA_COLUMNS], rows, left=2)
                  + '<p class="note">bend+: excess chord deviation over torch\'s, per lane-frame; kinks+: lane-frames where it exceeds '
                  "20 px at 1280 wide; jit+: RMS frame-to-frame change of x_runner - x_torch; flicker+: lane existence changes torch "
                  "does not make, per second (docs/metrics.md).</p>")
        from ..runs.replay import has_gt

        # Without GT (drive logs) accuracy is absent: what the deployed forms add is the news, so it leads.
        sections.insert(0 if not has_gt(doc) else 1, deltas)
    captured = _captures_section(doc)
    if captured:
        sections.append(("Captured on a target", captured))
    per_case = doc.get("per_case", [])
    if per_case:
        cols = [("acc", "accuracy", ".4f"), ("F1", "f1_50", ".4f"), ("dx p99", "dx_ref_p99_px", ".3f"), ("dx max", "dx_ref_max_px", ".2f"),
                ("bend p99", "bend_p99_px", ".2f"), ("kink %", "kink_rate", ".2%"), ("jit near", "jitter_rms_near", ".3f"),
                ("jit mid", "jitter_rms_mid", ".3f"), ("jit far", "jitter_rms_far", ".3f"), ("osc Hz", "jitter_oscillation_hz_near", ".2f"),
                ("non-finite", "nonfinite_rate", ".3f"), ("gap p99", "pipeline_gap_p99_px", ".2f"),
                ("bend+ p99", "added_bend_p99_px", ".3f"), ("jit+ near", "added_jitter_rms_near", ".4f"), ("flicker+", "added_flicker_hz", ".3f")]
        rows = [[_e(r["case"]), _e(r["runner"]), _e(r["pipeline"]), str(r["frames"])] + [_n(r.get(k), f) for _, k, f in cols]
                for r in sorted(per_case, key=lambda r: (r["case"], r["pipeline"], r["runner"] != REFERENCE, r["runner"]))]
        sections.append(("Per case", _table("per-case", ["case", "runner", "pipeline", "frames"] + [c for c, _, _ in cols], rows, left=3)))
    if doc.get("errors"):
        sections.append(("Failed cases", "".join(f"<p><b>{_e(e['case'])}</b>: {_e(e['error'])}</p>" for e in doc["errors"])))
    lanes = _RunLanes(folder, doc)
    if lanes.ok:
        if deployed:  # where the engine differs from torch is what a reviewer looks at first: right after the deltas
            at = next(i for i, (title, _) in enumerate(sections) if title.startswith("Deployment deltas")) + 1
            sections.insert(at, ("Where the deployed forms differ most from torch", lanes.differs()))
        strip = lanes.filmstrip()
        if strip:
            at = next(i for i, (title, _) in enumerate(sections) if title.startswith("Where the deployed forms differ")) + 1 if deployed else 1
            sections.insert(at, ("Filmstrip: where a deployed runner swings most against torch", strip))
        sections.append(("Lane position over time", lanes.time_series([])))  # the note and the cases by jitter; each case's plot is in its section
        sections.extend(lanes.case_sections())
        sections.append(("Worst bends (model quality: where the model itself is most jagged)", lanes.gallery()))
    else:
        sections.append(("Lane position over time", f'<p class="note">{_e(lanes.why)}</p>'))
    sections.append(("Provenance", _provenance(doc["provenance"])))
    return sections


def _first_then_rest(first, rest):
    """`first`'s rows, then `rest`'s that are not among them (same index), in order."""
    import pandas as pd

    return pd.concat([first, rest[~rest.index.isin(first.index)]])


class _RunLanes:
    """The lanes of a replay's frames.parquet, with the cases' GT and frames where they can be read."""

    def __init__(self, folder: Path, doc: dict):
        self.doc, self.ok, self.why = doc, False, ""
        try:
            import pandas as pd

            self.df = pd.read_parquet(folder / "frames.parquet", columns=["case", "frame", "t", "runner", "pipeline", "lane", "lane_name",
                                                                             "x", "bend_px", "bend_row", "dx_ref_max_px"])
        except (OSError, ValueError) as exc:
            self.why = f"frames.parquet could not be read: {exc}"
            return
        if self.df.empty:
            self.why = "frames.parquet has no rows"
            return
        pipes = list(dict.fromkeys(self.df.pipeline.astype(str)))
        self.pipeline = "vehicle" if "vehicle" in pipes else pipes[0]
        self.runners = [r for r in dict.fromkeys(self.df.runner.astype(str))]
        # The deployed forms, the one that moves lanes most from torch first: the one whose swing is plotted.
        dx = {r["runner"]: r.get("dx_ref_mean_px") or 0.0 for r in doc["results"] if r["pipeline"] == self.pipeline}
        self.deployed = sorted((r for r in self.runners if r != REFERENCE), key=lambda r: -np.nan_to_num(dx.get(r, 0.0))) or [REFERENCE]
        self.ok = True
        self._cases: dict = {}

    def case(self, name: str):
        """(Case or None, model rows) for a case of the run; None when its folder cannot be read now."""
        if name not in self._cases:
            from ..cases.format import load_case

            info = self.doc["provenance"]["cases"][name]
            try:
                c = load_case(info["path"])
            except Exception:  # moved or changed since the run: the report goes on without its frames and GT
                c = None
            self._cases[name] = (c, np.asarray(info["model_rows"], np.float64))
        return self._cases[name]

    def lanes(self, case: str, runner: str):
        """frames[T], t[T], x[T, L, R], lane names of one runner on the report's pipeline (None if it has no rows)."""
        sel = self.df[(self.df.case == case) & (self.df.runner == runner) & (self.df.pipeline == self.pipeline)].sort_values(["frame", "lane"])
        if sel.empty:
            return None
        L = int(sel.lane.max()) + 1
        x = np.stack(sel.x.to_numpy()).reshape(-1, L, len(sel.x.iloc[0])).astype(np.float64)
        return sel.frame.to_numpy()[::L], sel.t.to_numpy()[::L], x, list(sel.lane_name.astype(str).to_numpy()[:L])

    def gt(self, case: str, frames: np.ndarray | None = None):
        from ..cases.lanes import resample_rows

        c, rows = self.case(case)
        if c is None or c.gt is None:
            return None
        g = resample_rows(c.gt, c.anchor_rows, rows)
        return g if frames is None else g[frames]

    def worst_jitter_cases(self) -> list[str]:
        """The cases by near-row jitter on the deployed runner that moves lanes most from torch, worst first."""
        per_case = [r for r in self.doc.get("per_case", []) if r["pipeline"] == self.pipeline and r["runner"] in self.deployed]
        worst = sorted({r["case"]: r for r in sorted(per_case, key=lambda r: np.nan_to_num(r.get("jitter_rms_near") or 0.0))}.values(),
                       key=lambda r: -np.nan_to_num(r.get("jitter_rms_near") or 0.0))
        return [r["case"] for r in worst] or sorted(self.df.case.astype(str).unique())

    def time_series(self, focus: list[str], note: bool = True) -> str:
        """The lane-over-time plot of each case in `focus`, after the note that explains them when `note`."""
        out = []
        from ..metrics.jitter import lookahead_rows

        for case in focus:
            series, names, t = {}, None, None
            for r in self.runners:
                got = self.lanes(case, r)
                if got is not None:
                    _, t, x, names = got
                    series[r] = x
            if not series:
                continue
            gt = self.gt(case)
            ref = series.get(REFERENCE, next(iter(series.values())))
            dep = series.get(self.deployed[0], ref)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                swing = np.nanmean(np.abs(np.diff(dep - (gt if gt is not None and gt.shape == dep.shape else ref), axis=0)), axis=(0, 2))
            lane = int(np.nanargmax(np.where(np.isfinite(swing), swing, -1))) if np.isfinite(swing).any() else 0
            looks = lookahead_rows(ref.shape[2])
            title = f"{case}: lane {names[lane]} on the {self.pipeline} pipeline (the lane that swings most on {self.deployed[0]})"
            png = figures.lane_over_time(title, t, {k: v[:, lane] for k, v in series.items()},
                                         gt[:, lane] if gt is not None and gt.shape == ref.shape else None, REFERENCE, looks)
            out.append(f"<figure>{_img(png, f'lane position over time, {case}')}</figure>")
        text = ('<p class="note">Each case\'s section below plots the lane that swings most on the deployed runner that moves lanes most'
                f" from torch ({_e(self.deployed[0])}). Top: the lane's x at the near, mid and far look-ahead rows; bottom: each runner"
                " minus torch fp32 on the same input, where a backend's own swing shows. The cases by near-row jitter, worst first: "
                + ", ".join(f'<a href="#{_slug("Case " + c)}">{_e(c)}</a>' for c in self.worst_jitter_cases()) + ".</p>")
        return (text if note else "") + "".join(out)

    def _drawn(self, case: str, frame: int, runners: list[tuple[str, str]], caption: str, with_gt: bool = True,
               width: int = 640) -> str | None:
        """One frame of a case with the lanes of `runners` ((name, kind)) drawn over it, as a figure."""
        from ..cases.preview import frame_rgb

        c, rows = self.case(case)
        if c is None:
            return None
        lanes = {}
        gt = self.gt(case, np.array([frame])) if with_gt else None
        if gt is not None:
            lanes["GT"] = (gt[0], "gt")
        for name, kind in runners:
            got = self.lanes(case, name)
            if got is not None and f"{name} ({self.pipeline})" not in lanes:  # torch as the deployed runner: drawn once, as the reference
                frames, _, x, _ = got
                lanes[f"{name} ({self.pipeline})"] = (x[int(np.searchsorted(frames, frame))], kind)
        png = figures.overlay(frame_rgb(c, int(frame)), rows, lanes, caption, width=width)
        return f"<figure>{_img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>"

    def differs(self) -> str:
        """The lane-frames where each deployed runner's lanes are farthest from torch fp32's: each
        runner's worst first, then the next worst of any runner, one per frame and runner."""
        d = self.df[(self.df.pipeline == self.pipeline) & (self.df.runner.astype(str) != REFERENCE)].dropna(subset=["dx_ref_max_px"])
        d = d[d.dx_ref_max_px > 0].sort_values("dx_ref_max_px", ascending=False).drop_duplicates(["case", "frame", "runner"])
        if d.empty:
            return '<p class="note">No deployed runner moves a lane point from torch fp32 on this pipeline.</p>'
        firsts = d.drop_duplicates("runner")
        pick = _first_then_rest(firsts, d).head(DIFFERS)
        items = [self._drawn(r.case, int(r.frame), [(REFERENCE, "reference"), (r.runner, "deployed")],
                             f"{r.runner} vs torch: {r.case} frame {r.frame} lane {r.lane_name}: {r.dx_ref_max_px:.2f} px", with_gt=False)
                 for r in pick.itertuples()]
        items = [i for i in items if i]
        if not items:
            return '<p class="note">The cases\' folders could not be read, so their frames are not shown.</p>'
        return ('<p class="note">The lane-frames where a deployed runner\'s lanes are farthest from torch fp32\'s on the same input '
                f'(largest point difference; each runner\'s worst first, at most {DIFFERS}): green torch fp32 (drawn wide), red the '
                'deployed runner; the caption gives the difference in source px.</p><div class="gallery differs">' + "".join(items) + "</div>")

    def filmstrip(self) -> str | None:
        """FILMSTRIP consecutive frames around the largest frame-to-frame change of x_runner - x_torch at
        the near row, for the deployed runner and case with the most added swing: torch and the runner
        drawn on each frame."""
        from ..metrics.jitter import lookahead_rows

        per_case = [r for r in self.doc.get("per_case", []) if r["pipeline"] == self.pipeline and r["runner"] != REFERENCE
                    and np.isfinite(r.get("added_jitter_rms_near") or np.nan)]
        if not per_case:
            return None
        worst = max(per_case, key=lambda r: r["added_jitter_rms_near"])
        dep, ref = self.lanes(worst["case"], worst["runner"]), self.lanes(worst["case"], REFERENCE)
        if dep is None or ref is None or len(dep[0]) < 2 or dep[2].shape != ref[2].shape:
            return None
        frames, t, x, names = dep
        near = lookahead_rows(x.shape[2])["near"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            swing = np.nanmax(np.abs(np.diff(x[:, :, near] - ref[2][:, :, near], axis=0)), axis=1)  # [T-1]: the worst lane per step
        if not np.isfinite(swing).any() or np.nanmax(swing) <= 0:
            return None
        k = int(np.nanargmax(swing))
        lo = int(np.clip(k + 1 - FILMSTRIP // 2, 0, max(len(frames) - FILMSTRIP, 0)))
        items = []
        for i in range(lo, min(lo + FILMSTRIP, len(frames))):
            caption = f"frame {frames[i]}  t {t[i]:.2f} s" + (f"  swing {swing[i - 1]:.3g} px" if i == k + 1 else "")
            item = self._drawn(worst["case"], int(frames[i]), [(REFERENCE, "reference"), (worst["runner"], "deployed")], caption,
                               with_gt=False, width=320)
            if item:
                items.append(item)
        if not items:
            return None
        return (f'<p class="note">{_e(worst["runner"])} on {_e(worst["case"])} ({self.pipeline} pipeline), the deployed runner and case '
                f'with the most added swing (jit+ near {worst["added_jitter_rms_near"]:.4f} px/frame): {len(items)} consecutive frames '
                f'around its largest frame-to-frame change of x_runner - x_torch at the near row ({np.nanmax(swing):.2f} px, '
                f'frames {frames[k]} to {frames[k + 1]}); green torch fp32 (drawn wide), red {_e(worst["runner"])}.</p>'
                '<div class="filmstrip">' + "".join(items) + "</div>")

    def case_sections(self) -> list[tuple[str, str]]:
        """A section per case: its rows of the per-case table and its lane's position over time."""
        cols = [("acc", "accuracy", ".4f"), ("F1", "f1_50", ".4f"), ("dx p99", "dx_ref_p99_px", ".3f"), ("dx max", "dx_ref_max_px", ".2f"),
                ("bend p99", "bend_p99_px", ".2f"), ("jit near", "jitter_rms_near", ".3f"), ("bend+ p99", "added_bend_p99_px", ".3f"),
                ("jit+ near", "added_jitter_rms_near", ".4f"), ("flicker+", "added_flicker_hz", ".3f")]
        out = []
        for case in sorted(self.df.case.astype(str).unique()):
            rows = [r for r in self.doc.get("per_case", []) if r["case"] == case]
            rows.sort(key=lambda r: (r["pipeline"], r["runner"] != REFERENCE, r["runner"]))
            table = _table(f"case-{_slug(case)}-table", ["runner", "pipeline"] + [c for c, _, _ in cols],
                           [[_e(r["runner"]), _e(r["pipeline"])] + [_n(r.get(k), f) for _, k, f in cols] for r in rows], left=2)
            out.append((f"Case {case}", table + self.time_series([case], note=False)))
        return out

    def gallery(self) -> str:
        d = self.df[(self.df.pipeline == self.pipeline) & self.df.runner.isin(self.deployed)].dropna(subset=["bend_px"])
        if d.empty:
            return '<p class="note">No bend values (no lanes found).</p>'
        d = d.sort_values("bend_px", ascending=False).drop_duplicates(["case", "frame"])
        d = d.groupby("case", sort=False, observed=True).head(GALLERY_PER_CASE).head(GALLERY)
        items = []
        for r in d.itertuples():
            _, rows = self.case(r.case)
            row = int(r.bend_row) if r.bend_row >= 0 else -1
            caption = f"{r.case} frame {r.frame}  {r.runner}  lane {r.lane_name}  bend {r.bend_px:.1f} px at row {rows[row]:.0f}"
            item = self._drawn(r.case, int(r.frame), [(REFERENCE, "reference"), (r.runner, "deployed")], caption)
            if item:
                items.append(item)
        if not items:
            return '<p class="note">The cases\' folders could not be read, so their frames are not shown.</p>'
        return (f'<p class="note">Model quality, not the deployment: the lane-frames with the largest bend on the deployed runners (one'
                f' per frame, at most {GALLERY_PER_CASE} per case; torch bends the same there unless the section above shows the frame):'
                ' blue GT, green torch fp32 (drawn wide, so where the deployed runner agrees only its edges show), red the'
                ' deployed runner.</p><div class="gallery bends">' + "".join(items) + "</div>")


# ----------------------------------------------------------------------------------------------- sweep

def sweep_sections(folder: Path, doc: dict) -> list[tuple[str, str]]:
    cols = [("frames", "frames", "d"), ("acc", "accuracy", ".4f"), ("acc drop", "accuracy_drop", "+.4f"), ("dx vs unperturbed", "dx_ref_mean_px", ".3f"),
            ("bend", "bend_mean_px", ".2f"), ("kink %", "kink_rate", ".2%"), ("jit near", "jitter_rms_near", ".3f"), ("non-finite", "nonfinite_rate", ".3f")]
    res = doc["results"]
    rows = [[_e(r["perturbation"]), str(r["severity"]), _e(r["runner"])] + [_n(r.get(k), f) for _, k, f in cols] for r in res]
    sections = [("Results", _table("sweep-results", ["perturbation", "severity", "runner"] + [c for c, _, _ in cols], rows, left=3))]
    metrics = {"accuracy": "TuSimple accuracy", "dx_ref_mean_px": "mean lateral shift vs unperturbed (px)",
               "bend_mean_px": "mean bend (px)", "jitter_rms_near": "near jitter (px/frame)"}
    curves = "".join(f"<figure>{_img(figures.sweep_curves(f'runner {r}', [x for x in res if x['runner'] == r], metrics), f'sweep curves {r}')}</figure>"
                     for r in dict.fromkeys(x["runner"] for x in res))
    sections.append(("Metric against severity", curves))
    if doc.get("errors"):
        sections.append(("Failed cases", "".join(f"<p><b>{_e(e['case'])}</b>: {_e(e['error'])}</p>" for e in doc["errors"])))
    sections.append(("Provenance", _provenance(doc["provenance"])))
    return sections


def _sweep_verdict(doc: dict) -> tuple[str, str]:
    if doc.get("errors"):
        return "bad", f"FAILED: {len(doc['errors'])} cases did not run"
    if doc.get("findings"):
        return "bad", f"FINDINGS: {'; '.join(doc['findings'])}"
    worst = max((r for r in doc["results"] if r["perturbation"] != "none"), key=lambda r: np.nan_to_num(r.get("accuracy_drop") or 0.0), default=None)
    if worst is None:
        return "ok", "OK: unperturbed only"
    return "warn", (f"Largest accuracy drop: {worst['perturbation']} severity {worst['severity']} on {worst['runner']} "
                    f"({_n(worst.get('accuracy_drop'), '+.3f')})")


# ----------------------------------------------------------------------------------------------- rank

def rank_sections(folder: Path, doc: dict) -> list[tuple[str, str]]:
    board = doc["leaderboard"]
    cols = [("score", "deploy_score", ".1f"), ("acc", "accuracy", ".4f"), ("F1", "f1", ".4f"), ("bend px", "bend_px", ".2f"),
            ("jitter", "jitter_near", ".3f"), ("dx torch", "dx_torch_px", ".3f"), ("pipe gap", "pipeline_acc_gap", ".4f"),
            ("worst acc", "perturbed_acc_worst", ".3f"), ("mCE", "mce", ".1f")]
    mark = {"better": " +", "worse": " -", "baseline": " =", "no evidence": "", "too few cases": " ?"}

    def cell(r, m, f):
        c = r[m]
        if c["value"] is None:
            return "-"
        return f"{_n(c['value'], f)} [{_n(c['ci'][0], f)}, {_n(c['ci'][1], f)}]{mark[c['vs_baseline']]}"

    rows = [[str(r["rank"]), _e(r["checkpoint"])] + [cell(r, m, f) for _, m, f in cols] + [_n(r["first_place_share"], ".2f"), "*" if r["pareto"] else ""]
            for r in board]
    table = _table("leaderboard", ["#", "checkpoint"] + [c for c, _, _ in cols] + ["P(1st)", "Pareto"], rows, left=2)
    note = (f'<p class="note">Deployed runner {_e(doc["deployed_runner"])}, vehicle pipeline; value [95% case-bootstrap interval]; '
            f"+/- better/worse than the baseline {_e(doc['baseline'])} (paired bootstrap), = the baseline. Score: 100 x weighted mean of "
            "candidate/baseline over " + _e(", ".join(f"{t} {w:g}" for t, w in doc["score_terms"].items())) + " (lower is better).</p>")
    bars = figures.interval_bars(board, {"deploy_score": "deployment score", "accuracy": "accuracy", "bend_px": "bend (px)",
                                         "jitter_near": "near jitter (px/frame)"})
    defs = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in doc.get("definitions", {}).items())
    return [("Leaderboard", table + note), ("Intervals", f"<figure>{_img(bars, 'metric intervals per checkpoint')}</figure>"),
            ("Pareto front", f"<figure>{_img(figures.pareto(board), 'Pareto front')}</figure>"),
            ("Definitions", f'<ul class="note">{defs}</ul>'),
            ("Errors", "".join(f"<p>{_e(e['checkpoint'])} on {_e(e['case'])}: {_e(e['error'])}</p>" for e in doc.get("errors", []))),
            ("Provenance", _provenance(doc["provenance"]))]


def _rank_verdict(doc: dict) -> tuple[str, str]:
    top = doc["leaderboard"][0] if doc["leaderboard"] else None
    if doc.get("errors"):
        return "bad", f"INCOMPLETE: {len(doc['errors'])} evaluation units failed"
    if top is None:
        return "bad", "No checkpoint ranked"
    return "ok", (f"First: {top['checkpoint']} (deployment score {_n(top['deploy_score']['value'], '.1f')}, first in "
                  f"{top['first_place_share']:.0%} of resamples); baseline {doc['baseline']}")


# ----------------------------------------------------------------------------------------------- gate

def gate_sections(folder: Path, doc: dict) -> list[tuple[str, str]]:
    from .baseline import OVERALL

    def where(c):
        return "all cases" if c["case"] == OVERALL else c["case"]

    from .gate_verdict import describe_check, groups

    summary = doc.get("summary") or []
    sections = [("What differs, and what failed", "<ul>" + "".join(f"<li>{_e(line.strip())}</li>" for line in summary
                                                                   if not line.startswith(("  ", "failures by"))) + "</ul>")]
    gs = groups(doc["checks"])
    rows = [[_e(g["status"]), _e(g["runner"]), _e(f"{g['family']} ({g['kind']})"), str(g["checks"]), _e(", ".join(g["pipelines"])),
             _e(describe_check(g["worst"]))] for g in gs]
    sections.append(("Failures by runner x metric family (worst case of each; every check is in junit.xml and gate.json)",
                     _table("gate-groups", ["status", "runner", "family", "checks", "pipelines", "worst"], rows,
                            [g["status"] for g in gs], left=6) if gs else "<p>Every check passed.</p>"))
    overall = [c for c in doc["checks"] if c["case"] == OVERALL and c["measured"] is not None]
    rows = [[_e(c["runner"]), _e(c["pipeline"]), _e(c["rule"]), _n(c["measured"]), _n(c["allowed"]), _n(c["baseline"]), _e(c["status"])]
            for c in overall]
    sections.append(("Overall checks", _table("gate-overall", ["runner", "pipeline", "rule", "measured", "allowed", "baseline", "status"], rows,
                                              [c["status"] if c["status"] != "pass" else "" for c in overall], left=3)))
    run = Path(doc["candidate"]["run"])
    run = run if run.is_absolute() or run.is_dir() else folder / run.name
    try:
        run_doc = read_summary(run, ("parity.replay/1",))
    except UsageError:
        run_doc = None
    if run_doc is not None and doc.get("drift_worst"):
        sections.insert(2, ("Where the candidate's lanes moved most from the baseline's", _drift_gallery(doc, run, run_doc)))
    if run_doc is not None:
        sections += [(f"Candidate run: {h}", b) for h, b in replay_sections(run, run_doc) if h != "Provenance"]
    sections.append(("Provenance", "<h3>baseline</h3>" + _provenance(doc["baseline"]["provenance"])
                     + "<h3>candidate</h3>" + _provenance(doc["candidate"]["provenance"] or {})))
    return sections


def _drift_gallery(doc: dict, run: Path, run_doc: dict) -> str:
    """The lane-frames the gate found farthest from the baseline's own lanes, both drawn on the frame."""
    from .baseline import load_baseline

    try:
        keys, x = load_baseline(doc["baseline"]["path"]).lanes
    except (UsageError, TypeError) as exc:  # moved, changed or lane-less since the gate ran
        return f'<p class="note">The baseline\'s lanes cannot be read now: {_e(exc)}</p>'
    inverse = {v: k for k, v in (doc.get("rename") or {}).items()}
    lanes, items = _RunLanes(run, run_doc), []
    for w in doc["drift_worst"]:
        sel = ((keys.case == w["case"]) & (keys.runner == w["runner"]) & (keys.pipeline == w["pipeline"]) & (keys.frame == w["frame"])).to_numpy()
        lanes.pipeline = w["pipeline"]
        got = lanes.lanes(w["case"], inverse.get(w["runner"], w["runner"])) if lanes.ok else None
        c, rows = lanes.case(w["case"]) if lanes.ok else (None, None)
        if c is None or got is None or not sel.any():
            continue
        from ..cases.preview import frame_rgb

        base_x = x[sel][np.argsort(keys.lane.to_numpy()[sel])]
        frames, _, cand_x, names = got
        caption = (f"{w['runner']} on {w['pipeline']}: {w['case']} frame {w['frame']} lane {names[w['lane']]}: "
                   f"{w['drift_px']:.2f} px from the baseline")
        png = figures.overlay(frame_rgb(c, w["frame"]), rows, {"baseline": (base_x, "reference"),
                                                                "candidate": (cand_x[int(np.searchsorted(frames, w["frame"]))], "deployed")},
                              caption)
        items.append(f"<figure>{_img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>")
    if not items:
        return '<p class="note">The cases\' frames could not be read, so the lanes are not drawn.</p>'
    return ('<p class="note">The lane-frames whose points moved most from the baseline run\'s own lanes (largest |dx|, one per frame '
            'and runner): green the baseline (drawn wide), red the candidate.</p><div class="gallery drift">' + "".join(items) + "</div>")


def _gate_verdict(doc: dict) -> tuple[str, str]:
    from .gate_verdict import headline

    n = doc["counts"]
    return ("ok" if doc["verdict"] == "pass" else "bad",
            f"{doc.get('headline') or headline(doc)}: {n['pass']} checks passed, {n['fail']} regressions, {n['error']} could not be compared")


# ----------------------------------------------------------------------------------------------- entry

KINDS = {
    # file, schema, title, verdict, sections
    "gate": ("gate.json", "parity.gate/1", "parity gate", _gate_verdict, gate_sections),
    "rank": ("rank.json", "parity.rank/1", "parity rank", _rank_verdict, rank_sections),
    "replay": ("summary.json", "parity.replay/1", "parity replay", _replay_verdict, replay_sections),
    "sweep": ("summary.json", "parity.sweep/1", "parity sweep", _sweep_verdict, sweep_sections),
}


def detect(folder: Path) -> tuple[str, dict]:
    """(kind, document) of a run folder: gate.json, rank.json or a replay/sweep summary.json."""
    from ..runs.folder import check_finished

    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    check_finished(folder)
    for kind, (name, schema, *_rest) in KINDS.items():
        if (folder / name).is_file():
            doc = read_summary(folder, ("parity.replay/1", "parity.sweep/1") if name == "summary.json" else (schema,), name)
            if doc["schema"] == schema:
                return kind, doc
    raise UsageError(f"{folder}: not a replay, sweep, rank or gate folder (no summary.json, rank.json or gate.json)")


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    folder = Path(folder)
    kind, doc = detect(folder)
    _, _, title, verdict, sections = KINDS[kind]
    when = doc.get("finished") or doc.get("started") or ""
    prov = doc.get("provenance") or (doc.get("candidate") or {}).get("provenance") or {}
    subtitle = (f"{_e(folder)} &middot; finished {_e(when[:19].replace('T', ' '))} UTC &middot; git {_e(str(prov.get('git_sha'))[:12])}"
                f" &middot; command: <code>parity {_e(' '.join(doc.get('command') or []))}</code>")
    page = _page(f"{title}: {folder.name}", subtitle, verdict(doc), sections(folder, doc))
    path = Path(out) if out else folder / "report.html"
    atomic.write_text(path, page)
    return path
