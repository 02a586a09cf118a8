"""The claims table (`parity claims`): each claim of the source documents put to the test on the zoo.

A claim is one measurement with a direction: method a against method b on a deployment-board column
(parity rank's units, the two-stage seed-then-case bootstrap of the method board), a against b on a
model probe (accuracy under FGSM, accuracy lost to weight noise: parity.training.probes, bootstrapped
the same way), the reinit recipe's per-layer diagnostic over its seeds, or a correlation across the
zoo. Every claim gets its value, a 95% interval and a two-sided p-value; Holm's step-down over the
table's claims decides the verdict: reproduced (significant, the claimed sign), refuted (significant,
the other sign) or inconclusive at this budget; a claim whose methods have fewer than MIN_SEEDS
seeds is not measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import bootstrap as B
from .methods import MIN_SEEDS, SeedCaseSamples, holm

# Recipes that train on adversarial examples: their robustness comes from the attack, not from how
# far they move, so the laziness correlation leaves them out.
ADVERSARIAL = ("fgsm", "uat-ot", "uat-ft")


@dataclass(frozen=True)
class Claim:
    id: str
    text: str  # the claim as the source documents make it
    source: str
    kind: str  # board | probe | layers | laziness
    measure: str  # a board column, a probe measure, or the layers/laziness statistic
    a: str = ""
    b: str = ""
    direction: int = 1  # the claim says (a - b) * direction > 0

    def measurement(self) -> str:
        what = PROBE_LABELS.get(self.measure) or BOARD_LABELS.get(self.measure) or self.measure
        return f"{self.a} - {self.b}: {what}" if self.a else what


BOARD_LABELS = {"mce": "mCE over the deployment mismatches (lower is better)", "accuracy": "held-out accuracy, ort-fp16, vehicle pipeline",
                "dx_torch_px": "ort-fp16 vs torch fp32 lateral gap, px (lower is better)",
                "perturbed_acc_worst": "worst accuracy over the mismatches"}
PROBE_LABELS = {"fgsm": "accuracy under FGSM (2 levels)", "flatness": "accuracy lost to 5% weight noise (lower: wider optimum)",
                "reinit_vs_rerandom": "reinit recipe, mean over layers of acc(layer reset to checkpoint 0) - acc(layer re-randomised)",
                "low_layers": "reinit recipe, acc(upper layers reset to checkpoint 0) - acc(lower layers reset), mean per half",
                "laziness_rho": "Spearman rho across the zoo (adversarial recipes left out): weight change from the parent vs accuracy under FGSM"}

CLAIMS = (
    Claim("reinit>rerandom", "re-initialisation beats re-randomisation", "Zhang, Bengio & Singer 2019", "layers", "reinit_vs_rerandom"),
    Claim("low-layers", "low layers matter more (resetting them costs more)", "Zhang, Bengio & Singer 2019", "layers", "low_layers"),
    Claim("fgsm-adversarial", "FGSM training improves adversarial robustness", "Goodfellow et al. 2015; Wong et al. 2020", "probe", "fgsm", "fgsm", "erm"),
    Claim("fgsm-corruption", "FGSM training improves robustness (deployment mismatches)", "Goodfellow et al. 2015", "board", "mce", "fgsm", "erm", -1),
    Claim("fgsm-generalisation", "FGSM training regularises: better generalisation", "Goodfellow et al. 2015", "board", "accuracy", "fgsm", "erm"),
    Claim("swa-wider", "SWA finds wider optima", "Izmailov et al. 2018", "probe", "flatness", "swa", "erm", -1),
    Claim("swa-generalisation", "SWA generalises better", "Izmailov et al. 2018", "board", "accuracy", "swa", "erm"),
    Claim("swalp-quantisation", "SWA in low precision (SWALP) is robust to quantisation noise", "Yang et al. 2019", "board", "dx_torch_px", "swalp", "erm", -1),
    Claim("soup-greedy>uniform", "greedy soups beat uniform soups", "Wortsman et al. 2022", "board", "accuracy", "soup-greedy", "soup-uniform"),
    Claim("soup-greedy>single", "greedy soups beat a single fine-tuned model", "Wortsman et al. 2022", "board", "accuracy", "soup-greedy", "erm"),
    Claim("regmixup-robust", "RegMixup improves robustness under covariate shift", "Pinto et al. 2022", "board", "mce", "regmixup", "erm", -1),
    Claim("rotation-robust", "rotation self-supervision improves robustness", "Hendrycks et al. 2019", "board", "mce", "rotation-ssl", "erm", -1),
    Claim("uat-ot-adversarial", "UAT-OT improves adversarial robustness from unlabelled data", "Alayrac et al. 2019", "probe", "fgsm", "uat-ot", "erm"),
    Claim("uat-ft-adversarial", "UAT-FT improves adversarial robustness from unlabelled data", "Alayrac et al. 2019", "probe", "fgsm", "uat-ft", "erm"),
    Claim("lazy-fragile", "lazy training is adversarially fragile", "Wang et al. 2022", "laziness", "laziness_rho"),
    Claim("wise-ft-shift", "WiSE-FT keeps robustness under distribution shift", "Wortsman et al. 2022 (WiSE-FT)", "board", "mce", "wise-ft", "erm", -1),
)


def _t_summary(values, level: float = B.LEVEL) -> dict:
    """Mean over seeds with Student's t interval and the two-sided p of a zero mean."""
    from scipy.stats import t

    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    if v.size < 2:
        return {"value": float(v.mean()) if v.size else float("nan"), "ci": [float("nan")] * 2, "p": float("nan"), "seeds": int(v.size)}
    m, se = float(v.mean()), float(v.std(ddof=1)) / np.sqrt(v.size)
    half = float(t.ppf(0.5 + level / 2, v.size - 1)) * se
    p = float(2 * t.sf(abs(m) / se, v.size - 1)) if se > 0 else (1.0 if m == 0 else 0.0)
    return {"value": m, "ci": [m - half, m + half], "p": p, "seeds": int(v.size)}


def layer_statistics(reports: list[dict]) -> dict[str, list[float]]:
    """Per reinit seed: mean over layers of reinit - rerandom accuracy, and upper-half minus lower-half reinit accuracy."""
    out = {"reinit_vs_rerandom": [], "low_layers": []}
    for rep in reports:
        ri, rr = rep.get("layer_reinit_accuracy") or {}, rep.get("layer_rerandom_accuracy") or {}
        layers = [k for k in ri if k in rr]
        if len(layers) < 2:
            continue
        out["reinit_vs_rerandom"].append(float(np.mean([ri[k] - rr[k] for k in layers])))
        half = len(layers) // 2
        out["low_layers"].append(float(np.mean([ri[k] for k in layers[half:]]) - np.mean([ri[k] for k in layers[:half]])))
    return out


def mean_weight_change(meta: dict) -> float:
    """Mean over layers of the sidecar's relative weight change from the parent (NaN if trained from scratch)."""
    lz = meta.get("laziness") or {}
    vals = [v for v in (lz.get("relative_weight_change") or {}).values() if isinstance(v, (int, float)) and np.isfinite(v)]
    return float(np.mean(vals)) if vals and lz.get("reference") == "parent checkpoint" else float("nan")


def laziness_correlation(change: np.ndarray, S: np.ndarray, N: np.ndarray, groups: dict[str, list[int]], n_boot: int, seed: int,
                         level: float = B.LEVEL) -> dict:
    """Spearman rho of weight change vs FGSM accuracy across checkpoints; resamples methods (with their
    seeds) and cases. S, N [C, K] probe sums and counts."""
    from scipy.stats import norm, spearmanr

    C = S.shape[0]
    point = B.ratio(S, N)
    keys = list(groups)
    every = sum(groups.values(), [])
    if len(keys) < 3 or len(set(change[every])) < 2 or len(set(point[every])) < 2:
        return {"value": float("nan"), "ci": [float("nan")] * 2, "p": float("nan"), "seeds": len(every), "methods": len(keys)}
    rho = float(spearmanr(change[every], point[every]).statistic)
    rng = np.random.default_rng(seed + 104729)
    acc = B.ratio(S, N, B.case_weights(C, n_boot, seed))  # [B, K]
    samples = np.full(n_boot, np.nan)
    for b in range(n_boot):
        ks = sum((groups[keys[i]] for i in rng.integers(0, len(keys), len(keys))), [])
        if len(set(change[ks])) > 1 and len(set(acc[b, ks])) > 1:  # one method drawn every time: no correlation to speak of
            samples[b] = spearmanr(change[ks], acc[b, ks]).statistic
    samples = samples[np.isfinite(samples)]
    lo, hi = B.interval(samples, level)
    sd = float(samples.std(ddof=1)) if samples.size > 1 else float("nan")
    p = float(2 * norm.sf(abs(rho) / sd)) if sd > 0 else float("nan")
    return {"value": rho, "ci": [float(lo), float(hi)], "p": p, "seeds": len(every), "methods": len(keys)}


def verdict(claim: Claim, cell: dict, level: float = B.LEVEL) -> str:
    if cell.get("why_not"):
        return "not measured"
    if not np.isfinite(cell.get("p_holm", np.nan)) or not np.isfinite(cell["value"]):
        return "not measured"
    if cell["p_holm"] >= 1 - level:
        return "inconclusive at this budget"
    return "reproduced" if cell["value"] * claim.direction > 0 else "refuted"


def evaluate_claims(board_samples: SeedCaseSamples | None, probe_samples: SeedCaseSamples | None, reinit_reports: list[dict],
                    laziness: dict | None, claims=CLAIMS, level: float = B.LEVEL) -> list[dict]:
    """One row per claim: measurement, value [interval], seeds, p, Holm-adjusted p, verdict."""
    rows = []
    for c in claims:
        row = {"id": c.id, "claim": c.text, "source": c.source, "measurement": c.measurement(), "kind": c.kind,
               "direction": "higher" if c.direction > 0 else "lower", "value": float("nan"), "ci": [float("nan")] * 2, "p": float("nan")}
        if c.kind in ("board", "probe"):
            sc = board_samples if c.kind == "board" else probe_samples
            missing = [g for g in (c.a, c.b) if sc is None or g not in sc.groups]
            if missing:
                row["why_not"] = f"{missing[0]}: not in the zoo"
            else:
                cmp = sc.compare(c.a, c.b, c.measure)
                row.update(value=cmp["diff"], ci=cmp["diff_ci"], p=cmp["p"], seeds={g: len(sc.groups[g]) for g in (c.a, c.b)},
                           a_value=sc.summary(c.a, c.measure), b_value=sc.summary(c.b, c.measure))
                few = [g for g in (c.a, c.b) if len(sc.groups[g]) < MIN_SEEDS]
                if few:
                    row["why_not"] = f"{few[0]}: fewer than {MIN_SEEDS} seeds"
                elif sc.n_cases < B.MIN_CASES_FOR_VERDICT:
                    row["why_not"] = f"{sc.n_cases} cases, fewer than {B.MIN_CASES_FOR_VERDICT}"
        elif c.kind == "layers":
            per_seed = layer_statistics(reinit_reports)[c.measure]
            if len(per_seed) < MIN_SEEDS:
                row["why_not"] = f"reinit: {len(per_seed)} seeds with the per-layer diagnostic, fewer than {MIN_SEEDS}"
            else:
                st = _t_summary(per_seed, level)
                row.update(value=st["value"], ci=st["ci"], p=st["p"], seeds={"reinit": st["seeds"]}, per_seed=per_seed)
        elif c.kind == "laziness":
            if laziness is None or not np.isfinite(laziness["value"]):
                row["why_not"] = "fewer than 3 methods with a weight change and an FGSM probe"
            else:
                row.update(value=laziness["value"], ci=laziness["ci"], p=laziness["p"],
                           seeds={"checkpoints": laziness["seeds"], "methods": laziness["methods"]})
        rows.append(row)
    adjusted = holm({r["id"]: r["p"] for r in rows if not r.get("why_not")})
    for c, r in zip(claims, rows):
        r["p_holm"] = adjusted.get(r["id"], float("nan"))
        r["verdict"] = verdict(c, r, level)
    return rows


def format_claims(rows: list[dict], markdown: bool = False) -> str:
    def num(v):
        return "-" if not np.isfinite(v) else (f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}")

    def seeds(r):
        s = r.get("seeds")
        return ", ".join(f"{k} {v}" for k, v in s.items()) if isinstance(s, dict) else "-"

    head = ["claim", "measurement", "value [95% interval]", "seeds", "p (Holm)", "verdict"]
    body = []
    for r in rows:
        val = f"{num(r['value'])} [{num(r['ci'][0])}, {num(r['ci'][1])}]" if np.isfinite(r["value"]) else "-"
        p = f"{r['p']:.3g} ({r['p_holm']:.3g})" if np.isfinite(r.get("p_holm", np.nan)) else "-"
        verdict_text = r["verdict"] + (f" ({r['why_not']})" if r.get("why_not") else "")
        body.append([f"{r['claim']} ({r['source']})", r["measurement"], val, seeds(r), p, verdict_text])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    return "\n".join("  ".join(x) for x in [head] + body)
