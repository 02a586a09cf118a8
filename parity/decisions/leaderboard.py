"""The leaderboard of `parity rank`: per checkpoint, each metric with a 95% case-level bootstrap
interval, paired comparisons with the baseline, the corruption error relative to the baseline
(ImageNet-C's mCE), a composite deployment score, the Pareto front and rank stability.

Input: the units table (parity.runs.units), one row per checkpoint x case x runner x pipeline x
perturbation x severity with `<metric>__sum` / `<metric>__n`. Every figure is a function of
per-(checkpoint, selection, metric) ratios of sums over cases, so the point estimate (every case
once) and each bootstrap resample (case multiplicities) go through the same code.
"""
from __future__ import annotations

import tomllib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..runners import REFERENCE
from . import bootstrap as B

SCORE_TERMS = ("error", "bend", "jitter", "corruption", "kink")
DEFAULT_WEIGHTS_FILE = Path(__file__).with_name("score.toml")

DEFINITIONS = {
    "accuracy": "TuSimple accuracy vs GT on labelled frames; deployed runner, vehicle pipeline, unperturbed",
    "f1": "CULane F1 at IoU 0.5 (official rasterisation); deployed runner, vehicle pipeline, unperturbed",
    "bend_px": "mean bend (excess chord deviation over GT, px per lane-frame); deployed, vehicle, unperturbed",
    "kink_rate": "share of lane-frames with a kink > 20 px at 1280 wide; deployed, vehicle, unperturbed",
    "jitter_near": "RMS frame-to-frame swing of the residual vs GT at the near row (px per frame); deployed, vehicle, unperturbed",
    "oscillation_hz": "left-right swings per second at the near row; deployed, vehicle, unperturbed",
    "dx_torch_px": "deployment gap (backend): mean lateral difference of the deployed runner from torch fp32, same input (px)",
    "backend_acc_gap": "deployment gap (backend): accuracy of torch minus the deployed runner, vehicle pipeline",
    "pipeline_acc_gap": "deployment gap (pipeline): accuracy on the training pipeline minus the vehicle pipeline, deployed runner",
    "pipeline_bend_gap": "deployment gap (pipeline): bend on the vehicle minus the training pipeline (px), deployed runner",
    "pipeline_jitter_gap": "deployment gap (pipeline): near jitter on the vehicle minus the training pipeline, deployed runner",
    "perturbed_acc_mean": "accuracy averaged over every perturbation x severity; deployed, vehicle",
    "perturbed_acc_worst": "lowest accuracy over perturbations x severities; deployed, vehicle",
    "perturbed_bend_mean": "bend averaged over perturbations x severities (px)",
    "perturbed_bend_worst": "highest bend over perturbations x severities (px)",
    "perturbed_jitter_mean": "near jitter averaged over perturbations x severities",
    "perturbed_jitter_worst": "highest near jitter over perturbations x severities",
    "mce": "corruption error relative to the baseline (ImageNet-C mCE): mean over perturbations of "
           "sum over severities of (1 - acc), divided by the baseline's; 100 = baseline, lower is better",
    "nonfinite_rate": "share of frames with NaN/Inf output; deployed, vehicle, over every condition",
    "deploy_score": "composite: 100 x weighted mean of candidate/baseline over the score terms (score.toml); 100 = baseline, lower is better",
}
HIGHER_IS_BETTER = {"accuracy", "f1", "perturbed_acc_mean", "perturbed_acc_worst"}
BOARD_COLUMNS = ("deploy_score", "accuracy", "f1", "bend_px", "jitter_near", "dx_torch_px", "pipeline_acc_gap", "perturbed_acc_worst", "mce")


def load_weights(path: str | None) -> dict[str, float]:
    """The [rank.score] weights: the packaged defaults, overridden by `path`'s [rank.score] if given."""
    weights = tomllib.loads(DEFAULT_WEIGHTS_FILE.read_text())["rank"]["score"]
    if path:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: not valid TOML: {exc}") from None
        section = doc.get("rank", {}).get("score") if isinstance(doc.get("rank"), dict) else None
        if not isinstance(section, dict):
            raise UsageError(f"{path}: no [rank.score] table")
        for k, v in section.items():
            if k not in SCORE_TERMS:
                raise UsageError(f"{path}: [rank.score] {k!r} is not a score term ({', '.join(SCORE_TERMS)})")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise UsageError(f"{path}: [rank.score] {k} must be a number >= 0, got {v!r}")
            weights[k] = float(v)
    if not any(weights.get(t, 0) > 0 for t in SCORE_TERMS):
        raise UsageError(f"{path or DEFAULT_WEIGHTS_FILE}: [rank.score] needs at least one weight above 0")
    return {t: float(weights.get(t, 0.0)) for t in SCORE_TERMS}


@dataclass
class Leaderboard:
    units: object  # pandas DataFrame
    checkpoints: list[str]
    baseline: str
    deployed: str
    vehicle: str
    other_pipelines: list[str]
    weights: dict[str, float]
    n_boot: int = B.N_BOOT
    seed: int = 0

    def _tensor(self):
        """S, N [C, K, Sel, M] and the selection index (runner, pipeline, perturbation, severity) -> sel."""
        from ..runs.units import RATIO_METRICS

        u = self.units
        cases = sorted(u["case"].unique()) if len(u) else []
        sels = sorted({(r.runner, r.pipeline, r.perturbation, int(r.severity)) for r in u.itertuples()}) if len(u) else []
        ci = {c: i for i, c in enumerate(cases)}
        ki = {k: i for i, k in enumerate(self.checkpoints)}
        si = {s: i for i, s in enumerate(sels)}
        S = np.zeros((len(cases), len(self.checkpoints), len(sels), len(RATIO_METRICS)))
        N = np.zeros_like(S)
        if len(u):
            c = u["case"].map(ci).to_numpy()
            k = u["checkpoint"].map(ki).to_numpy()
            s = np.array([si[(r.runner, r.pipeline, r.perturbation, int(r.severity))] for r in u.itertuples()])
            for m, name in enumerate(RATIO_METRICS):
                S[c, k, s, m] = u[f"{name}__sum"].to_numpy(np.float64)
                N[c, k, s, m] = u[f"{name}__n"].to_numpy(np.float64)
        self.metric_index = {m: i for i, m in enumerate(RATIO_METRICS)}
        return cases, sels, si, S, N

    def _metrics(self, R: np.ndarray, sels, si) -> dict[str, np.ndarray]:
        """Every board metric as [B, K] from ratios R [B, K, Sel, M]."""
        mi, dep, veh = self.metric_index, self.deployed, self.vehicle
        nan = np.full(R.shape[:2], np.nan)

        def get(metric, runner=dep, pipeline=veh, pert="none", sev=0):
            j = si.get((runner, pipeline, pert, sev))
            return nan if j is None else R[:, :, j, mi[metric]]

        perturbed = [s for s in sels if s[0] == dep and s[1] == veh and s[2] != "none"]

        def over(metric, how):
            if not perturbed:
                return nan
            stack = np.stack([R[:, :, si[s], mi[metric]] for s in perturbed], axis=-1)
            with np.errstate(invalid="ignore"), _quiet():
                return {"mean": np.nanmean, "min": np.nanmin, "max": np.nanmax}[how](stack, axis=-1)

        out = {
            "accuracy": get("accuracy"), "f1": get("f1"), "bend_px": get("bend_px"), "kink_rate": get("kink_rate"),
            "jitter_near": get("jitter_rms_near"), "oscillation_hz": get("oscillation_hz_near"), "dx_torch_px": get("dx_torch_px"),
            "backend_acc_gap": get("accuracy", runner=REFERENCE) - get("accuracy"),
        }
        other = self.other_pipelines[0] if self.other_pipelines else None
        out["pipeline_acc_gap"] = get("accuracy", pipeline=other) - get("accuracy") if other else nan
        out["pipeline_bend_gap"] = get("bend_px") - get("bend_px", pipeline=other) if other else nan
        out["pipeline_jitter_gap"] = get("jitter_rms_near") - get("jitter_rms_near", pipeline=other) if other else nan
        out["perturbed_acc_mean"], out["perturbed_acc_worst"] = over("accuracy", "mean"), over("accuracy", "min")
        out["perturbed_bend_mean"], out["perturbed_bend_worst"] = over("bend_px", "mean"), over("bend_px", "max")
        out["perturbed_jitter_mean"], out["perturbed_jitter_worst"] = over("jitter_rms_near", "mean"), over("jitter_rms_near", "max")
        deployed_all = [s for s in sels if s[0] == dep]
        with np.errstate(invalid="ignore"), _quiet():
            out["nonfinite_rate"] = np.nanmax(np.stack([R[:, :, si[s], mi["nonfinite_rate"]] for s in deployed_all], -1), -1) if deployed_all else nan
        b = self.checkpoints.index(self.baseline)
        # mCE: per perturbation, errors summed over severities, relative to the baseline's; then the mean.
        perts = sorted({s[2] for s in perturbed})
        if perts:
            ces = []
            for p in perts:
                err = np.stack([1 - R[:, :, si[s], mi["accuracy"]] for s in perturbed if s[2] == p], -1).sum(-1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    ces.append(err / err[:, b : b + 1])
            out["mce"] = 100 * np.mean(np.stack(ces, -1), -1)
        else:
            out["mce"] = nan
        terms = {"error": 1 - out["accuracy"], "bend": out["bend_px"], "jitter": out["jitter_near"],
                 "corruption": out["mce"] / 100, "kink": out["kink_rate"]}
        used = {t: w for t, w in self.weights.items() if w > 0 and not (t == "corruption" and not perts)}
        self.score_terms_used = used
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = sum(w * (terms[t] / (terms[t][:, b : b + 1] if t != "corruption" else 1.0)) for t, w in used.items())
        out["deploy_score"] = 100 * rel / sum(used.values())
        return out

    def compute(self) -> dict:
        import pandas as pd

        cases, sels, si, S, N = self._tensor()
        K = len(self.checkpoints)
        point = self._metrics(B.ratio(S, N, np.ones((1, len(cases)))), sels, si)
        W = B.case_weights(len(cases), self.n_boot, self.seed)
        samples = self._metrics(B.ratio(S, N, W), sels, si)
        b = self.checkpoints.index(self.baseline)
        long, board = [], []
        share = B.first_place_share(samples["deploy_score"], higher_is_better=False)
        present = N.sum(axis=(2, 3)) > 0  # [C, K]: which cases each checkpoint has units for
        for k, name in enumerate(self.checkpoints):
            row = {"checkpoint": name, "cases": int(present[:, k].sum()), "complete": bool(present[:, k].all()) if len(cases) else False,
                   "first_place_share": float(share[k])}
            for m, v in point.items():
                hib = m in HIGHER_IS_BETTER
                lo, hi = B.interval(samples[m][:, k])
                d = samples[m][:, k] - samples[m][:, b]
                dlo, dhi = B.interval(d)
                verdict = ("baseline" if k == b else "too few cases" if len(cases) < B.MIN_CASES_FOR_VERDICT
                           else B.verdict(d, hib))
                long.append({"checkpoint": name, "metric": m, "value": float(v[0, k]), "ci_lo": float(lo), "ci_hi": float(hi),
                             "diff_vs_baseline": float(v[0, k] - v[0, b]), "diff_lo": float(dlo), "diff_hi": float(dhi),
                             "verdict": verdict, "higher_is_better": hib, "cases": row["cases"]})
                row[m] = {"value": float(v[0, k]), "ci": [float(lo), float(hi)], "vs_baseline": verdict}
            board.append(row)
        front = pareto_front([r["accuracy"]["value"] for r in board], [r["bend_px"]["value"] for r in board],
                             [r["jitter_near"]["value"] for r in board])
        for k, r in enumerate(board):
            r["pareto"] = bool(front[k])
        order = sorted(range(K), key=lambda k: (not np.isfinite(board[k]["deploy_score"]["value"]), board[k]["deploy_score"]["value"]))
        board = [board[k] for k in order]
        for i, r in enumerate(board):
            r["rank"] = i + 1
        return {"board": board, "long": pd.DataFrame(long), "pareto": [r["checkpoint"] for r in board if r["pareto"]],
                "first_place_share": {r["checkpoint"]: r["first_place_share"] for r in board},
                "score_terms": self.score_terms_used, "cases": cases, "baseline": self.baseline}


def pareto_front(acc, bend, jitter) -> np.ndarray:
    """Non-dominated checkpoints: no other is at least as good on accuracy (higher), bend and jitter
    (lower) and strictly better on one. NaN on any objective: not on the front."""
    P = np.stack([-np.asarray(acc, float), np.asarray(bend, float), np.asarray(jitter, float)], 1)
    ok = np.isfinite(P).all(1)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        others = P[ok & (np.arange(len(P)) != i)]
        if ((others <= P[i]).all(1) & (others < P[i]).any(1)).any():
            front[i] = False
    return front


def format_board(summary: dict) -> str:
    """The terminal leaderboard: value [95% interval] per column, the verdict against the baseline."""
    mark = {"better": "+", "worse": "-", "no evidence": " ", "baseline": "=", "too few cases": "?"}

    def cell(r, m, fmt):
        c = r[m]
        if not np.isfinite(c["value"]):
            return "-"
        lo, hi = c["ci"]
        return f"{format(c['value'], fmt)} [{format(lo, fmt)},{format(hi, fmt)}]{mark[c['vs_baseline']]}"

    cols = [("deploy_score", "score", ".1f"), ("accuracy", "acc", ".4f"), ("bend_px", "bend px", ".2f"), ("jitter_near", "jitter", ".2f"),
            ("dx_torch_px", "dx torch", ".3f"), ("pipeline_acc_gap", "pipe gap", ".4f"), ("perturbed_acc_worst", "worst acc", ".3f"),
            ("mce", "mCE", ".1f")]
    cells = [[str(r["rank"]), r["checkpoint"]] + [cell(r, m, f) for m, _, f in cols]
             + [f"{r['first_place_share']:.2f}", "*" if r["pareto"] else ""] for r in summary["leaderboard"]]
    head = ["#", "checkpoint"] + [h for _, h, _ in cols] + ["P(1st)", "pareto"]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    line = lambda row: "  ".join(v.rjust(w) if i not in (1,) else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
    out = [line(head), "-" * len(line(head))] + [line(c) for c in cells]
    n_cases = max((r["cases"] for r in summary["leaderboard"]), default=0)
    out.append(f"deployed runner {summary['deployed_runner']}, vehicle pipeline; value [95% case-bootstrap interval over {n_cases} cases]; "
               f"+/- better/worse than the baseline {summary['baseline']} (paired bootstrap), '=' the baseline"
               + (f", '?' no verdict below {B.MIN_CASES_FOR_VERDICT} cases" if n_cases < B.MIN_CASES_FOR_VERDICT else ""))
    out.append("score: 100 x weighted mean of candidate/baseline over " + ", ".join(f"{t} {w:g}" for t, w in summary["score_terms"].items())
               + " (lower is better); P(1st): share of resamples where it has the best score; pareto: not dominated on acc, bend, jitter")
    incomplete = [r["checkpoint"] for r in summary["leaderboard"] if not r["complete"]]
    if incomplete:
        out.append("INCOMPLETE (units failed; see errors in rank.json): " + ", ".join(incomplete))
    return "\n".join(out)


@contextmanager
def _quiet():
    with warnings.catch_warnings():  # all-NaN slices are expected: a metric a checkpoint has no value for
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
