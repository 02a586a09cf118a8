"""`parity claims --rank DIR`: gathers what the claims table (parity.decisions.claims) measures from a
finished rank folder: its units (the deployment board, rebuilt as the rank built it), the ranked
checkpoints and their sidecars (verified against the hashes the rank recorded), the rank's cases
(verified likewise) and the model probes (parity.training.probes), cached per checkpoint x case by
content so a second run or one more checkpoint probes only what is new."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import UsageError
from ..provenance import git_sha, machine, sha256_json, source_hash, versions
from . import bootstrap as B
from . import claims as CL

log = logging.getLogger(__name__)
PROBE_CODE = ("training/probes.py", "training/recipes/fgsm.py", "metrics/tusimple.py", "models", "preprocessing")


def _rank_doc(rank_dir: Path) -> dict:
    path = rank_dir / "rank.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file: give --rank a finished rank folder (parity rank --out DIR)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable rank summary: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != "parity.rank/1":
        raise UsageError(f"{path}: not a parity rank summary (schema {doc.get('schema') if isinstance(doc, dict) else None!r})")
    if "board" not in doc:
        raise UsageError(f"{path}: written before rank recorded its board settings; run the same parity rank again (its units are cached)")
    return doc


def _checkpoints(doc: dict, warn) -> list:
    from ..models.checkpoint import load_checkpoint

    out = []
    for name, rec in doc["provenance"]["checkpoints"].items():
        try:
            ck = load_checkpoint(rec["path"])
        except Exception as exc:  # a missing or damaged checkpoint leaves the claims that need it unmeasured
            warn(f"{rec['path']}: left out: {exc}")
            continue
        if ck.sha256 != rec["sha256"]:
            warn(f"{rec['path']}: left out: its weights ({ck.sha256[:12]}) are not the ones ranked ({rec['sha256'][:12]})")
            continue
        out.append((name, ck))
    return out


def _cases(doc: dict) -> list:
    from ..cases.format import load_case

    cases = []
    for name, rec in doc["provenance"]["cases"].items():
        case = load_case(rec["path"])
        if case.content_hash() != rec["sha256"]:
            raise UsageError(f"{rec['path']}: case {name} changed since the rank (content hash differs); rank again before testing claims")
        cases.append(case)
    return cases


def _probe_all(ckpts, cases, settings, cache_dir: Path, progress) -> tuple[np.ndarray, np.ndarray, dict]:
    """Probe sums S and counts N [C, K] per probe; computes only what the cache does not hold."""
    import torch

    from ..runs.units import UnitCache
    from ..training import probes as P

    C, K = len(cases), len(ckpts)
    S = {m: np.zeros((C, K)) for m in P.PROBES}
    N = {m: np.zeros((C, K)) for m in P.PROBES}
    cache = UnitCache(cache_dir.parent, cache_dir.name)
    base = {"settings": settings.__dict__, "code": source_hash(PROBE_CODE)}
    case_hashes = [case.content_hash() for case in cases]  # hashed once, not once per checkpoint
    inputs = {}
    for k, (name, ck) in enumerate(ckpts):
        keys = [sha256_json({"checkpoint": ck.sha256, "case": h, **base})[:32] for h in case_hashes]
        recs = [_probes_of(cache.get(key)) for key in keys]
        todo = [c for c, rec in enumerate(recs) if rec is None]
        cache.hits += C - len(todo)
        if todo:
            torch.set_num_threads(2)
            model, adapter = ck.build_model(), ck.adapter()
            for c in todo:
                if cases[c].name not in inputs:
                    inputs[cases[c].name] = P.prepare(cases[c], adapter, settings)
            have = [c for c in todo if inputs[cases[c].name] is not None]
            for c, rec in zip(have, P.probe(model, adapter, [inputs[cases[c].name] for c in have], settings)):
                recs[c] = rec
            for c in todo:
                recs[c] = recs[c] or {}  # a case without labelled frames: nothing to probe, counts stay 0
                cache.put(keys[c], {"probes": recs[c]})
        for c, rec in enumerate(recs):
            for m, (s, n) in rec.items():
                S[m][c, k], N[m][c, k] = s, n
        progress(f"probed {k + 1}/{K} {name}")
    return S, N, {"cached": cache.hits, "evaluated": C * K - cache.hits}


def _probes_of(rec: dict | None) -> dict | None:
    """A cached record's probes as {probe: (sum, count)}, or None when it is absent or malformed (recomputed)."""
    try:
        probes = rec["probes"]
        if all(isinstance(v, (list, tuple)) and len(v) == 2 and np.isfinite(v[0]) for v in probes.values()):
            return {m: (float(v[0]), int(v[1])) for m, v in probes.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    return None


def run_claims(rank_dir, out=None, settings=None, progress=print) -> tuple[Path, dict]:
    import pandas as pd

    from ..training.probes import ProbeSettings
    from . import leaderboard as LB
    from .methods import MethodBoard, SeedCaseSamples, method_of

    rank_dir = Path(rank_dir)
    out = Path(out) if out else rank_dir / "claims"
    settings = settings or ProbeSettings()
    started, warnings = datetime.now(timezone.utc), []

    def warn(msg):
        warnings.append(msg)
        log.warning(msg)

    doc = _rank_doc(rank_dir)
    ckpts = _checkpoints(doc, warn)
    names = [n for n, _ in ckpts]
    groups_by_name: dict[str, list[str]] = {}
    for n, ck in ckpts:
        groups_by_name.setdefault(method_of(ck.meta), []).append(n)
    idx = {g: [names.index(n) for n in ns] for g, ns in groups_by_name.items()}
    try:
        units = pd.read_parquet(rank_dir / "units.parquet")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{rank_dir / 'units.parquet'}: cannot read the rank's units: {exc}") from None
    units = units[units["checkpoint"].isin(names)]
    bd = doc["board"]
    lb = LB.Leaderboard(units, names, doc["baseline"], doc["deployed_runner"], bd["vehicle"], bd["other_pipelines"],
                        doc["score_weights"], bd["n_boot"], bd["seed"])
    base = next(g for g, ns in groups_by_name.items() if doc["baseline"] in ns) if doc["baseline"] in names else next(iter(groups_by_name))
    board = MethodBoard(lb, groups_by_name, base).samples()

    cases = _cases(doc)
    t0 = time.perf_counter()
    S, N, probe_counts = _probe_all(ckpts, cases, settings, out / "probes", progress)
    probe_s = time.perf_counter() - t0
    S["flatness"], N["flatness"] = S["clean"] - S["weight_noise"], N["clean"]
    weights = B.case_weights(len(cases), bd["n_boot"], bd["seed"])
    point = {m: B.ratio(S[m], N[m]) for m in S}
    resampled = {m: B.ratio(S[m], N[m], weights) for m in S}
    probe_samples = SeedCaseSamples(point, {g: resampled for g in idx}, idx, len(cases), bd["seed"])

    reinit_reports = [ck.meta.get("recipe_report") or {} for _, ck in ckpts if ck.meta.get("method") == "reinit" and ck.meta.get("parents")]
    change = np.array([CL.mean_weight_change(ck.meta) for _, ck in ckpts])
    lazy_groups = {g: [k for k in ks if np.isfinite(change[k])] for g, ks in idx.items() if g not in CL.ADVERSARIAL}
    lazy_groups = {g: ks for g, ks in lazy_groups.items() if ks}
    laziness = CL.laziness_correlation(change, S["fgsm"], N["fgsm"], lazy_groups, bd["n_boot"], bd["seed"])

    rows = CL.evaluate_claims(board, probe_samples, reinit_reports, laziness)
    summary = {
        "schema": "parity.claims/1", "started": started.isoformat(), "finished": datetime.now(timezone.utc).isoformat(),
        "rank": str(rank_dir), "rank_git_sha": doc.get("provenance", {}).get("git_sha"), "correction": "Holm", "level": B.LEVEL,
        "min_seeds": CL.MIN_SEEDS, "probe_settings": settings.__dict__, "probes": dict(probe_counts, seconds=round(probe_s, 1)),
        "claims": rows, "warnings": warnings,
        "provenance": {"git_sha": git_sha(), "versions": versions(), "machine": machine(),
                       "checkpoints": {n: {"path": str(ck.path), "sha256": ck.sha256, "method": method_of(ck.meta)} for n, ck in ckpts},
                       "cases": {c.name: c.content_hash() for c in cases}},
    }
    atomic.write_json(out / "claims.json", summary)
    atomic.write_text(out / "claims.md", "# Claims of the source documents, tested on the zoo\n\n" + CL.format_claims(rows, markdown=True) + "\n")
    return out, summary

