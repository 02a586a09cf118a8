"""The claims table: verdicts follow the measured sign after Holm's correction, re-training noise gets
no verdict, the reinit and laziness statistics computed plainly, and the model probes' mechanisms
(an FGSM step hurts more than random noise of the same size; weight noise is the stated share)."""
import numpy as np
import pytest
import torch

from parity.decisions import bootstrap as B
from parity.decisions import claims as CL
from parity.decisions.methods import SeedCaseSamples

C = 12


def _probe_samples(effects: dict[str, float], seeds=3, seed_sd=0.01, n_boot=800, rng_seed=0) -> SeedCaseSamples:
    """Per checkpoint x case FGSM-probe sums: case difficulty shared by all, a per-method effect and a per-seed training noise."""
    rng = np.random.default_rng(rng_seed)
    difficulty = rng.normal(0, 0.05, C)
    S, groups, k = [], {}, 0
    for m, eff in effects.items():
        for _ in range(seeds):
            q = eff + rng.normal(0, seed_sd)
            S.append(np.clip(0.6 + difficulty + q + rng.normal(0, 0.005, C), 0, 1) * 30)
            groups.setdefault(m, []).append(k)
            k += 1
    S = np.array(S).T  # [C, K]
    N = np.full_like(S, 30.0)
    w = B.case_weights(C, n_boot, 0)
    point, res = {"fgsm": B.ratio(S, N)}, {"fgsm": B.ratio(S, N, w)}
    return SeedCaseSamples(point, {g: res for g in groups}, groups, C, 0)


def _claims(*pairs):
    return tuple(CL.Claim(f"{a}>{b}", f"{a} beats {b}", "test", "probe", "fgsm", a, b) for a, b in pairs)


def test_verdicts_follow_the_sign_after_holm_and_too_few_seeds_are_not_measured():
    sc = _probe_samples({"erm": 0.0, "fgsm": 0.08, "uat-ot": -0.08, "uat-ft": 0.0})
    rows = CL.evaluate_claims(None, sc, [], None, claims=_claims(("fgsm", "erm"), ("uat-ot", "erm"), ("uat-ft", "erm")))
    verdicts = {r["id"]: r["verdict"] for r in rows}
    assert verdicts == {"fgsm>erm": "reproduced", "uat-ot>erm": "refuted", "uat-ft>erm": "inconclusive at this budget"}
    fg = rows[0]
    # the value is the difference of the seed means of the plain per-checkpoint accuracy
    plain = np.mean(sc.point["fgsm"][sc.groups["fgsm"]]) - np.mean(sc.point["fgsm"][sc.groups["erm"]])
    assert fg["value"] == pytest.approx(plain, abs=1e-12) and fg["ci"][0] < fg["value"] < fg["ci"][1]
    assert all(r["p_holm"] >= r["p"] for r in rows)
    two = _probe_samples({"erm": 0.0, "fgsm": 0.08}, seeds=2)
    (row,) = CL.evaluate_claims(None, two, [], None, claims=_claims(("fgsm", "erm")))
    assert row["verdict"] == "not measured" and "fewer than 3 seeds" in row["why_not"]


def test_two_seed_sets_of_one_recipe_get_no_claim_verdict_over_repeated_draws():
    marked = 0
    for draw in range(20):
        sc = _probe_samples({"erm": 0.0, "erm-b": 0.0}, seed_sd=0.03, rng_seed=draw)
        (row,) = CL.evaluate_claims(None, sc, [], None, claims=_claims(("erm-b", "erm")))
        marked += row["verdict"] != "inconclusive at this budget"
    assert marked <= 2  # 5% nominal over 20 draws: at most two marks


def _report(reinit_gain: float, rng, layers=8, low_cost=0.0):
    names = [f"l{i}" for i in range(layers)]
    ri = {n: 0.6 + (low_cost if i >= layers // 2 else 0.0) + rng.normal(0, 0.01) for i, n in enumerate(names)}
    return {"layer_reinit_accuracy": ri, "layer_rerandom_accuracy": {n: v - reinit_gain + rng.normal(0, 0.01) for n, v in ri.items()}}


def test_layer_claims_are_plain_means_over_seeds_and_the_rerandom_mutation_is_not_reproduced():
    rng = np.random.default_rng(0)
    reports = [_report(0.3, rng, low_cost=0.2) for _ in range(3)]
    stats = CL.layer_statistics(reports)
    for rep, d, low in zip(reports, stats["reinit_vs_rerandom"], stats["low_layers"]):
        ri, rr = rep["layer_reinit_accuracy"], rep["layer_rerandom_accuracy"]
        assert d == pytest.approx(sum(ri[k] - rr[k] for k in ri) / len(ri))
        assert low == pytest.approx(np.mean([ri[f"l{i}"] for i in range(4, 8)]) - np.mean([ri[f"l{i}"] for i in range(4)]))
    rows = CL.evaluate_claims(None, None, reports, None, claims=CL.CLAIMS[:2])
    assert [r["verdict"] for r in rows] == ["reproduced", "reproduced"]
    # the mutation: "re-randomisation" that puts checkpoint 0 back is re-initialisation; the claim must not come out
    same = [{"layer_reinit_accuracy": r["layer_reinit_accuracy"], "layer_rerandom_accuracy": dict(r["layer_reinit_accuracy"])} for r in reports]
    assert CL.evaluate_claims(None, None, same, None, claims=CL.CLAIMS[:1])[0]["verdict"] != "reproduced"
    assert CL.evaluate_claims(None, None, reports[:2], None, claims=CL.CLAIMS[:1])[0]["verdict"] == "not measured"


def test_laziness_correlation_resamples_methods_and_cases():
    rng = np.random.default_rng(1)
    K, groups = 18, {f"m{i}": [3 * i, 3 * i + 1, 3 * i + 2] for i in range(6)}
    change = np.repeat(np.linspace(0.01, 0.1, 6), 3) + rng.normal(0, 0.002, K)
    S = np.clip(0.3 + 3 * change[None, :] + rng.normal(0, 0.01, (C, K)), 0, 1) * 40
    N = np.full_like(S, 40.0)
    lz = CL.laziness_correlation(change, S, N, groups, 500, 0)
    from scipy.stats import spearmanr

    assert lz["value"] == pytest.approx(spearmanr(change, S.sum(0) / N.sum(0)).statistic)
    assert lz["value"] > 0.8 and lz["ci"][0] > 0 and lz["p"] < 0.01
    unrelated = np.clip(0.5 + rng.normal(0, 0.05, (1, K)) + rng.normal(0, 0.01, (C, K)), 0, 1) * 40
    flat = CL.laziness_correlation(change, unrelated, N, groups, 500, 0)
    assert abs(flat["value"]) < 0.6 and flat["ci"][0] < 0 < flat["ci"][1]  # no relation: no evidence


@pytest.fixture(scope="module")
def reference_probe(tiny_case):
    from parity.cases.format import load_case
    from parity.models.checkpoint import load_checkpoint
    from parity.training import probes as P

    ck = load_checkpoint("checkpoints/reference.pt")
    model, adapter = ck.build_model(), ck.adapter()
    settings = P.ProbeSettings(every=2)
    return model, adapter, P.prepare(load_case(tiny_case), adapter, settings), settings


def test_fgsm_probe_hurts_more_than_random_signs_of_the_same_size(reference_probe):
    import torch.nn.functional as F

    from parity.training import probes as P
    from parity.training.recipes.fgsm import input_units

    model, adapter, inp, settings = reference_probe
    pipe = adapter.pipelines()[settings.pipeline]
    x, y = torch.from_numpy(inp.x), torch.from_numpy(inp.targets)
    adv = P.fgsm_images(model, x, y, pipe, 2.0)
    eps, lo, hi = input_units(pipe, 2.0)
    assert torch.all((adv - x).abs() <= eps + 1e-6) and torch.all(adv >= lo - 1e-6) and torch.all(adv <= hi + 1e-6)
    rand = torch.clamp(x + eps * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0))), lo, hi)
    with torch.no_grad():
        clean_l, adv_l, rand_l = (float(F.cross_entropy(model(v), y)) for v in (x, adv, rand))
    assert adv_l > rand_l > 0.9 * clean_l and adv_l > clean_l * 1.05  # the gradient's sign, not any noise of that size
    (rec,) = P.probe(model, adapter, [inp], settings)
    n = len(inp.x)
    assert {k: v[1] for k, v in rec.items()} == {"clean": n, "fgsm": n, "weight_noise": n}
    assert rec["fgsm"][0] <= rec["clean"][0] and 0 <= rec["weight_noise"][0] <= n


def test_weight_noise_is_the_stated_share_of_each_tensors_rms_and_the_same_draw_for_every_checkpoint(reference_probe):
    from parity.training import probes as P

    model = reference_probe[0]
    a, b = P.noisy_state(model, 0.05, 3), P.noisy_state(model, 0.05, 3)
    base = model.state_dict()
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w, d = base[f"{name}.weight"], a[f"{name}.weight"] - base[f"{name}.weight"]
            assert float(d.pow(2).mean().sqrt()) == pytest.approx(0.05 * float(w.pow(2).mean().sqrt()), rel=0.15)
            assert torch.equal(a[f"{name}.weight"], b[f"{name}.weight"])
    assert all(torch.equal(a[k], base[k]) for k in base if "running" in k or k.endswith("bias"))


def _seed_checkpoint(parent, folder, method, seed, scale):
    from parity.models.checkpoint import save_checkpoint
    from parity.training.initial import laziness

    model = parent.build_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(100 + seed + (50 if method != "erm" else 0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=g))
    name = method if seed == 0 else f"{method}-s{seed}"
    meta = dict(parent.meta, name=name, method=method, hyperparameters={"seed": seed},
                parents=[{"path": str(parent.path), "sha256": parent.sha256, "method": "erm"}],
                laziness={"reference": "parent checkpoint", "relative_weight_change": laziness(model, start)})
    meta.pop("recipe_report", None)
    return save_checkpoint(folder / f"{name}.pt", model, meta)


def test_claims_end_to_end_from_a_rank_folder_equal_a_plain_recomputation(tmp_path):
    import json
    import shutil

    import torch.nn.functional as F

    from parity.cases.format import load_case
    from parity.cases.lanes import resample_rows
    from parity.cases.synth import write_case
    from parity.metrics.tusimple import tusimple_batch
    from parity.models.checkpoint import load_checkpoint
    from parity.training.recipes.fgsm import input_units

    from .conftest import _tiny_scenario, run_main

    cases = [str(write_case(_tiny_scenario(f"c{i}", seed=30 + i, frames=6), tmp_path / "cases" / f"c{i}")) for i in range(3)]
    parent = load_checkpoint("checkpoints/reference.pt")
    folder = tmp_path / "zoo"
    folder.mkdir()
    cks = [_seed_checkpoint(parent, folder, m, s, sc) for m, sc in (("erm", 0.01), ("fgsm", 0.08)) for s in range(3)]
    r = run_main("rank", "--checkpoints", str(folder / "*.pt"), "--cases", *cases, "--runners", "torch", "--perturb",
                 "crop_shift_y", "--severities", "5", "--n-boot", "300", "--no-progress", "--cache-dir", tmp_path / "cache",
                 "--out", tmp_path / "rank")
    assert r.returncode == 0, r.stderr
    r = run_main("claims", "--rank", tmp_path / "rank", "--every", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "rank" / "claims" / "claims.json").read_text())
    rows = {row["id"]: row for row in doc["claims"]}
    assert rows["reinit>rerandom"]["verdict"] == "not measured" and rows["swa-wider"]["verdict"] == "not measured"
    assert all(r["verdict"] == "not measured" for r in rows.values())  # 3 cases: values, no verdicts
    assert "3 cases, fewer than 6" in rows["fgsm-adversarial"]["why_not"]

    # FGSM accuracy by hand: one sign step of the cross-entropy gradient, scored at the case's own GT rows
    def fgsm_accuracy(ck):
        model, adapter = ck.build_model(), ck.adapter()
        pipe = adapter.pipelines()["training"]
        eps, lo, hi = input_units(pipe, 2.0)
        hits = frames = 0.0
        for p in cases:
            case = load_case(p)
            idx = np.flatnonzero(case.labelled)[::2]
            x = torch.from_numpy(pipe.prepare(case, idx)).requires_grad_(True)
            y = torch.from_numpy(adapter.targets(resample_rows(case.gt[idx], case.anchor_rows, adapter.anchor_rows(case.height)), float(case.width)))
            F.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                out = model(torch.clamp(x + eps * x.grad.sign(), lo, hi)).numpy()
            pred = resample_rows(adapter.decode(out, case.width), adapter.anchor_rows(case.height), case.anchor_rows)
            hits += tusimple_batch(pred, case.gt[idx], case.anchor_rows, case.width)[:, 0].sum()
            frames += len(idx)
        return hits / frames

    acc = {ck.name: fgsm_accuracy(ck) for ck in cks}
    plain = np.mean([acc[n] for n in ("fgsm", "fgsm-s1", "fgsm-s2")]) - np.mean([acc[n] for n in ("erm", "erm-s1", "erm-s2")])
    assert rows["fgsm-adversarial"]["value"] == pytest.approx(plain, abs=1e-6)
    # the board claims are the rank's own method board: the same difference of seed means
    rank = json.loads((tmp_path / "rank" / "rank.json").read_text())
    fg = next(m for m in rank["method_leaderboard"]["methods"] if m["method"] == "fgsm")
    assert rows["fgsm-generalisation"]["value"] == pytest.approx(fg["accuracy"]["diff_vs_baseline"], abs=1e-9)
    assert rows["fgsm-corruption"]["value"] == pytest.approx(fg["mce"]["diff_vs_baseline"], abs=1e-9)
    assert "| claim |" in (tmp_path / "rank" / "claims" / "claims.md").read_text()

    # weights swapped after the rank: that checkpoint is left out by its hash, named in a warning, and the probes are reused
    shutil.copy(folder / "erm-s1.pt", folder / "erm-s2.pt")
    r = run_main("claims", "--rank", tmp_path / "rank", "--every", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "erm-s2.pt: left out" in r.stdout and "from the cache" in r.stdout
    again = {row["id"]: row for row in json.loads((tmp_path / "rank" / "claims" / "claims.json").read_text())["claims"]}
    assert again["fgsm-adversarial"]["why_not"] == "erm: fewer than 3 seeds"  # two seeds of erm left
