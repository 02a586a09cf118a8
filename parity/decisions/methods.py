"""Method-level ranking: several seeds of each training method, a two-stage bootstrap, verdicts
corrected for the number of cells on the board.

A checkpoint-level interval resamples cases only: it says how sure we are about *this* model on
other roads, nothing about what re-training gives. A method's figure here is the mean over its
seeds (checkpoints whose sidecar names the method), and each bootstrap resample draws seeds with
replacement within every method, then cases with replacement (the same cases for every method:
the comparison is paired over cases, as the checkpoint board's is). Verdicts against the baseline
method come from the bootstrap distribution of the difference: a two-sided p-value per cell
(method x column, from the bootstrap standard error of the difference), adjusted by Holm's step-down over every cell of the board, so a board of
identical methods marks any cell with probability <= 1 - level. A method needs MIN_SEEDS seeds for
a verdict; the baseline may be one checkpoint (a fixed reference model, not a method estimate).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import bootstrap as B
from .leaderboard import BOARD_COLUMNS, HIGHER_IS_BETTER, Leaderboard, _quiet

MIN_SEEDS = 3
CORRECTION = "Holm"


def method_of(meta: dict) -> str:
    """The method a checkpoint's sidecar names; a model trained from scratch is its own kind of run."""
    name = str(meta.get("method") or "unknown")
    return name if meta.get("parents") else f"{name} (from scratch)"


def seed_of(meta: dict):
    return (meta.get("hyperparameters") or {}).get("seed")


def bootstrap_p(diff: np.ndarray, observed: float, seeds_a=(), seeds_b=(), n_cases: int = 0) -> float:
    """Two-sided p-value of a difference of 0 (method a - method b) from its variance components.

    Not the share of resamples past 0: with B resamples that cannot go below 2 / (B + 1), and Holm
    multiplies the smallest p by the number of cells (a 144-cell board would need B > 5,000 to mark
    anything). The bootstrap variance of the difference holds a case part and a seed part; the seed
    part a bootstrap over J seeds shrinks by (J-1)/J, so it is taken from the seeds' own values
    instead (var / J per method, `seeds_a`, `seeds_b`: per-seed values; one value: no seed part), and
    the tail is Student's t with Welch-Satterthwaite degrees of freedom from the parts: 3 seeds with
    a large spread do not pass for a population, 3 seeds that agree leave the cases to decide."""
    from scipy.stats import t

    d = np.asarray(diff, np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2 or not np.isfinite(observed):
        return float("nan")
    parts = []  # (variance, degrees of freedom)
    boot = float(d.var(ddof=1))
    shrunk = 0.0
    for vals in (seeds_a, seeds_b):
        v = np.asarray(vals, np.float64)
        v = v[np.isfinite(v)]
        if v.size >= 2:
            var = float(v.var(ddof=1)) / v.size
            parts.append((var, v.size - 1))
            shrunk += var * (v.size - 1) / v.size
    parts.append((max(boot - shrunk, 0.0), max(n_cases - 1, 1)))
    total = sum(v for v, _ in parts)
    if total == 0.0:
        return 1.0 if observed == 0 else 0.0
    df = total**2 / sum(v**2 / k for v, k in parts if v > 0)
    return float(2.0 * t.sf(abs(observed) / np.sqrt(total), df=df))


def holm(pvals: dict) -> dict:
    """Holm's step-down adjusted p-values (family-wise error control) of every finite p in `pvals`."""
    keys = sorted((k for k, p in pvals.items() if np.isfinite(p)), key=lambda k: pvals[k])
    m, running, out = len(keys), 0.0, {k: float("nan") for k in pvals}
    for i, k in enumerate(keys):
        running = max(running, min(1.0, (m - i) * pvals[k]))
        out[k] = running
    return out


def _combine(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[B] weighted mean over seeds of x [B, J] with seed multiplicities v [B, J]; a seed without a value adds nothing."""
    v = np.where(np.isfinite(x), v, 0.0)
    den = v.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, np.nansum(np.where(v > 0, x, 0.0) * v, 1) / np.where(den > 0, den, 1.0), np.nan)


class SeedCaseSamples:
    """Two-stage bootstrap samples of per-checkpoint metrics grouped into methods: the case resamples
    come in (`resampled[group][metric]` [B, K]; one shared array for every group when the comparison is
    paired over cases), the seeds within each method are drawn here. Method figures are means over
    the method's checkpoints; the board and the claims table (parity.decisions.claims) both read them."""

    def __init__(self, point: dict, resampled: dict, groups: dict[str, list[int]], n_cases: int, seed: int = 0, level: float = B.LEVEL):
        self.point, self.resampled, self.groups, self.n_cases, self.level = point, resampled, groups, n_cases, level
        n_boot = next(iter(next(iter(resampled.values())).values())).shape[0]
        rng = np.random.default_rng(seed + 7919)
        self.seed_w = {g: rng.multinomial(len(ks), np.full(len(ks), 1.0 / len(ks)), size=n_boot).astype(np.float64) for g, ks in groups.items()}
        self._samples: dict = {}

    def values(self, g: str, m: str) -> np.ndarray:
        """The method's per-seed point values of `m`."""
        return np.asarray(self.point[m], np.float64).reshape(-1)[self.groups[g]]

    def samples(self, g: str, m: str) -> np.ndarray:
        if (g, m) not in self._samples:
            self._samples[(g, m)] = _combine(self.resampled[g][m][:, self.groups[g]], self.seed_w[g])
        return self._samples[(g, m)]

    def mean(self, g: str, m: str) -> float:
        v = self.values(g, m)
        with _quiet():
            return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def summary(self, g: str, m: str) -> dict:
        v = self.values(g, m)
        with _quiet():
            sd = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan")
        lo, hi = B.interval(self.samples(g, m), self.level)
        return {"value": self.mean(g, m), "ci": [float(lo), float(hi)], "seed_sd": sd, "per_seed": [float(x) for x in v]}

    def compare(self, a: str, b: str, m: str) -> dict:
        """a - b on `m`: the difference of the seed means, its two-stage interval and two-sided p-value."""
        d = self.samples(a, m) - self.samples(b, m)
        diff = self.mean(a, m) - self.mean(b, m)
        lo, hi = B.interval(d, self.level)
        return {"diff": diff, "diff_ci": [float(lo), float(hi)],
                "p": bootstrap_p(d, diff, self.values(a, m), self.values(b, m), self.n_cases)}


@dataclass
class MethodBoard:
    board: Leaderboard
    methods: dict[str, list[str]]  # method -> its checkpoints (seeds), names as in board.checkpoints
    baseline: str  # the baseline's method
    paired: bool = True  # False: every method gets its own case resamples (only to show what pairing buys)
    level: float = B.LEVEL

    def samples(self) -> SeedCaseSamples:
        lb = self.board
        cases, sels, si, S, N = lb._tensor()
        C, n_boot = len(cases), lb.n_boot
        point = {m: v[0] for m, v in lb._metrics(B.ratio(S, N, np.ones((1, C))), sels, si).items()}
        idx = {g: [lb.checkpoints.index(c) for c in cks] for g, cks in self.methods.items()}
        if self.paired:
            shared = lb._metrics(B.ratio(S, N, B.case_weights(C, n_boot, lb.seed)), sels, si)
            per = {g: shared for g in idx}
        else:
            per = {g: lb._metrics(B.ratio(S, N, B.case_weights(C, n_boot, lb.seed + 1 + i)), sels, si) for i, g in enumerate(idx)}
        return SeedCaseSamples(point, per, idx, C, lb.seed, self.level)

    def compute(self) -> dict:
        sc = self.samples()
        C = sc.n_cases
        rows, pvals = [], {}
        for g, ks in sc.groups.items():
            row = {"method": g, "checkpoints": self.methods[g], "seeds": len(ks)}
            for m in sc.point:
                cmp = sc.compare(g, self.baseline, m)
                row[m] = dict(sc.summary(g, m), diff_vs_baseline=cmp["diff"], diff_ci=cmp["diff_ci"],
                              p=cmp["p"] if g != self.baseline else float("nan"))
                if g != self.baseline and m in BOARD_COLUMNS and len(ks) >= MIN_SEEDS and C >= B.MIN_CASES_FOR_VERDICT:
                    pvals[(g, m)] = row[m]["p"]
            rows.append(row)
        adjusted = holm(pvals)
        for row in rows:
            for m in sc.point:
                cell = row[m]
                cell["p_holm"] = adjusted.get((row["method"], m), float("nan"))
                cell["vs_baseline"] = self._verdict(row, m, cell)
        rows.sort(key=lambda r: (not np.isfinite(r["deploy_score"]["value"]), r["deploy_score"]["value"]))
        for i, r in enumerate(rows):
            r["rank"] = i + 1
        return {"methods": rows, "baseline": self.baseline, "correction": CORRECTION, "cells": len(pvals), "level": self.level,
                "min_seeds": MIN_SEEDS, "cases": C}

    def _verdict(self, row, m, cell) -> str:
        if row["method"] == self.baseline:
            return "baseline"
        if row["seeds"] < MIN_SEEDS:
            return "too few seeds"
        if not np.isfinite(cell["p_holm"]):
            return "too few cases" if m in BOARD_COLUMNS else "not on the board"
        if cell["p_holm"] >= 1 - self.level:
            return "no evidence"
        return "better" if (cell["diff_vs_baseline"] > 0) == (m in HIGHER_IS_BETTER) else "worse"


def format_methods(doc: dict) -> str:
    """The terminal method board: mean over seeds [95% two-stage interval] +-seed sd, verdict mark."""
    mark = {"better": "+", "worse": "-", "no evidence": " ", "baseline": "=", "too few seeds": "?", "too few cases": "?",
            "not on the board": " "}
    cols = [("deploy_score", "score", ".1f"), ("accuracy", "acc", ".4f"), ("bend_px", "bend px", ".2f"), ("jitter_near", "jitter", ".2f"),
            ("dx_torch_px", "dx torch", ".3f"), ("pipeline_acc_gap", "pipe gap", ".4f"), ("perturbed_acc_worst", "worst acc", ".3f"),
            ("mce", "mCE", ".1f")]

    def cell(c, fmt, spread):
        finite = lambda v: v is not None and np.isfinite(v)  # noqa: E731 (rank.json stores NaN as null)
        if not finite(c["value"]):
            return "-"
        sd = f" ±{format(c['seed_sd'], fmt)}" if spread and finite(c.get("seed_sd")) else ""
        return f"{format(c['value'], fmt)}{sd} [{format(c['ci'][0], fmt)},{format(c['ci'][1], fmt)}]{mark[c['vs_baseline']]}"

    cells = [[str(r["rank"]), r["method"], str(r["seeds"])] + [cell(r[m], f, m == "deploy_score") for m, _, f in cols] for r in doc["methods"]]
    head = ["#", "method", "seeds"] + [h for _, h, _ in cols]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    line = lambda row: "  ".join(v.ljust(w) if i == 1 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
    out = ["methods (mean over seeds):", line(head), "-" * len(line(head))] + [line(c) for c in cells]
    out.append(f"value ±sd over seeds [95% two-stage bootstrap: seeds within each method, then {doc['cases']} cases, paired]; "
               f"+/- better/worse than {doc['baseline']} after {doc['correction']}'s correction over {doc['cells']} cells; "
               f"'?' fewer than {doc['min_seeds']} seeds (or cases): an interval over cases says nothing about re-training")
    return "\n".join(out)
