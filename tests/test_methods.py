"""Method-level ranking: seeds resampled within methods, cases paired, Holm over the board's cells;
and the corruption error's normalisation against ImageNet-C's definition computed plainly."""
import numpy as np
import pandas as pd
import pytest

from parity.decisions import leaderboard as LB
from parity.decisions.methods import MethodBoard, bootstrap_p, format_methods, holm
from parity.runs.units import RATIO_METRICS

CASES = [f"c{i}" for i in range(12)]
PERTS = [("brightness", 1), ("brightness", 3), ("blur", 1), ("blur", 3)]


def _units(checkpoints: dict[str, float], seed=0, difficulty_sd=1.0, case_noise=0.05, frames=60) -> pd.DataFrame:
    """Units of checkpoints with a quality each (their method's effect plus their own seed's training
    noise); cases have a shared difficulty, each checkpoint x case x condition a little noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, difficulty_sd, len(CASES))
    rows = []
    for name, q in checkpoints.items():
        noise = rng.normal(0, case_noise, (len(CASES), 2, 2 + len(PERTS)))
        for c, case in enumerate(CASES):
            for r, runner in enumerate(("torch", "ort-fp16")):
                conds = [("training", "none", 0), ("vehicle", "none", 0)] + [("vehicle", p, s) for p, s in PERTS]
                for k, (pipe, pert, sev) in enumerate(conds):
                    e = 0.03 * difficulty[c] - 0.02 * q + 0.01 * sev + noise[c, r, k] * 0.02
                    acc = float(np.clip(0.9 - e, 0, 1))
                    bend = max(0.1, 8 + 2 * difficulty[c] - 2 * q + noise[c, r, k])
                    jit = max(0.1, 5 + 1.5 * difficulty[c] - 1.5 * q + noise[c, r, k])
                    rec = {m: (0.0, 0) for m in RATIO_METRICS}
                    rec.update({"accuracy": (acc * frames, frames), "f1": (acc * 100, 100), "bend_px": (bend * 4 * frames, 4 * frames),
                                "kink_rate": (0.1 * frames, frames), "jitter_rms_near": (jit * 4, 4), "oscillation_hz_near": (16.0, 4),
                                "dx_torch_px": ((0.0 if runner == "torch" else 0.01 + 0.001 * q) * 100, 100), "nonfinite_rate": (0.0, frames)})
                    row = {"checkpoint": name, "case": case, "runner": runner, "pipeline": pipe, "perturbation": pert, "severity": sev}
                    for m, (s, n) in rec.items():
                        row[f"{m}__sum"], row[f"{m}__n"] = float(s), int(n)
                    rows.append(row)
    return pd.DataFrame(rows)


def _seeded(methods: dict[str, float], seeds=3, seed_sd=0.3, rng_seed=0) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Each method's checkpoints: its effect plus a planted training noise per seed (what re-training changes)."""
    rng = np.random.default_rng(1000 + rng_seed)
    quality, groups = {}, {}
    for m, effect in methods.items():
        for s in range(seeds):
            name = f"{m}-s{s}"
            quality[name] = effect + rng.normal(0, seed_sd)
            groups.setdefault(m, []).append(name)
    return quality, groups


def _boards(quality, groups, baseline, n_boot=600, seed=0, paired=True, **kw):
    names = list(quality)
    units = _units(quality, seed=seed, **kw)
    lb = LB.Leaderboard(units, names, groups[baseline][0], "ort-fp16", "vehicle", ["training"], LB.load_weights(None), n_boot, seed)
    return lb, MethodBoard(lb, groups, baseline, paired=paired).compute()


def _marks(doc) -> list[tuple[str, str]]:
    return [(r["method"], m) for r in doc["methods"] for m in LB.BOARD_COLUMNS if r[m]["vs_baseline"] in ("better", "worse")]


def test_two_seed_sets_of_one_recipe_get_no_method_verdict_though_their_checkpoints_differ():
    quality, groups = _seeded({"erm-a": 0.0, "erm-b": 0.0}, seed_sd=0.3)
    lb, doc = _boards(quality, groups, "erm-a")
    assert _marks(doc) == []
    # the same checkpoints judged one by one on cases alone: re-training noise reads as method differences
    board = {r["checkpoint"]: r for r in lb.compute()["board"]}
    assert any(board[c][m]["vs_baseline"] in ("better", "worse") for c in groups["erm-b"] for m in LB.BOARD_COLUMNS)
    by = {r["method"]: r for r in doc["methods"]}
    assert by["erm-b"]["seeds"] == 3 and np.isfinite(by["erm-b"]["deploy_score"]["seed_sd"])
    assert by["erm-b"]["deploy_score"]["per_seed"] == pytest.approx([board[c]["deploy_score"]["value"] for c in groups["erm-b"]])
    assert "±" in format_methods(doc) and "Holm" in format_methods(doc)


def test_a_planted_method_effect_is_found_and_one_seed_gets_no_verdict():
    quality, groups = _seeded({"erm": 0.0, "good": 1.5, "bad": -1.5}, seed_sd=0.1)
    quality["lonely-s0"], groups["lonely"] = 3.0, ["lonely-s0"]
    _, doc = _boards(quality, groups, "erm")
    by = {r["method"]: r for r in doc["methods"]}
    for m in ("accuracy", "deploy_score", "bend_px", "jitter_near"):
        assert by["good"][m]["vs_baseline"] == "better" and by["bad"][m]["vs_baseline"] == "worse", m
    assert [r["method"] for r in doc["methods"]][:1] == ["lonely"] and by["lonely"]["accuracy"]["vs_baseline"] == "too few seeds"


def test_pairing_over_cases_finds_a_small_shift_that_unpaired_resampling_misses():
    # large case-to-case spread shared by every method, a small true shift, almost no seed noise
    quality, groups = _seeded({"erm": 0.0, "better": 0.08}, seed_sd=0.002)
    _, paired = _boards(quality, groups, "erm", difficulty_sd=2.0, case_noise=0.01)
    _, unpaired = _boards(quality, groups, "erm", difficulty_sd=2.0, case_noise=0.01, paired=False)
    p = {r["method"]: r for r in paired["methods"]}["better"]["accuracy"]
    u = {r["method"]: r for r in unpaired["methods"]}["better"]["accuracy"]
    assert p["vs_baseline"] == "better" and u["vs_baseline"] == "no evidence", (p, u)


def test_a_board_of_identical_methods_marks_at_most_5_percent_of_cells_over_repeated_draws():
    marked = cells = any_board = 0
    raw = 0
    for draw in range(12):
        quality, groups = _seeded({f"m{i}": 0.0 for i in range(5)}, seed_sd=0.2, rng_seed=draw)
        _, doc = _boards(quality, groups, "m0", n_boot=400, seed=draw)
        marks = _marks(doc)
        marked += len(marks)
        cells += doc["cells"]
        any_board += bool(marks)
        raw += sum(r[m]["p"] < 0.05 for r in doc["methods"] if r["method"] != "m0" for m in LB.BOARD_COLUMNS if np.isfinite(r[m]["p"]))
    assert cells == 12 * 4 * len(LB.BOARD_COLUMNS) - 12 * 4 * 0  # every non-baseline cell of every board is in the family
    assert marked / cells <= 0.05 and any_board / 12 <= 0.25
    assert raw > marked  # uncorrected p < 0.05 would have marked more: the correction is doing the work


def test_holm_and_the_bootstrap_p_value_by_hand():
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": float("nan")})
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert adj["a"] == pytest.approx(0.03) and adj["c"] == pytest.approx(0.06) and adj["b"] == pytest.approx(0.06) and np.isnan(adj["d"])
    from scipy.stats import norm, t

    d = np.random.default_rng(0).normal(0.3, 0.1, 4000)
    # no seeds: the cases' variance alone, t with n_cases - 1 df (here many: close to normal)
    assert bootstrap_p(d, 0.3, n_cases=4000) == pytest.approx(2 * norm.sf(0.3 / d.std(ddof=1)), rel=1e-2) and bootstrap_p(d, 0.0) == 1.0
    # three seeds that spread widely: their variance / 3 dominates, t with 2 df
    seeds = [0.0, 1.0, 2.0]
    assert bootstrap_p(np.zeros(100), 3.0, seeds, [5.0], 12) == pytest.approx(2 * t.sf(3.0 / np.sqrt(1.0 / 3), 2))


def test_mce_is_imagenet_c_normalisation_computed_plainly():
    """mCE = mean over perturbations of (errors summed over severities) / (the baseline's, summed
    likewise), accuracy pooled over cases as a ratio of sums; a per-severity normalisation differs."""
    units = _units({"erm": 0.0, "cand": 0.7}, seed=3)
    # make the severities' errors unequal so the two normalisations cannot agree by accident
    hit = (units.severity == 3) & (units.checkpoint == "cand")
    units.loc[hit, "accuracy__sum"] *= 0.85
    lb = LB.Leaderboard(units, ["erm", "cand"], "erm", "ort-fp16", "vehicle", ["training"], LB.load_weights(None), 50, 0)
    got = {r["checkpoint"]: r["mce"]["value"] for r in lb.compute()["board"]}

    def err(ck, pert, sev):
        u = units[(units.checkpoint == ck) & (units.runner == "ort-fp16") & (units.pipeline == "vehicle") & (units.perturbation == pert)
                  & (units.severity == sev)]
        return 1 - u["accuracy__sum"].sum() / u["accuracy__n"].sum()

    perts = sorted({p for p, _ in PERTS})
    sevs = {p: [s for q, s in PERTS if q == p] for p in perts}
    plain = 100 * np.mean([sum(err("cand", p, s) for s in sevs[p]) / sum(err("erm", p, s) for s in sevs[p]) for p in perts])
    wrong = 100 * np.mean([np.mean([err("cand", p, s) / err("erm", p, s) for s in sevs[p]]) for p in perts])
    assert got["cand"] == pytest.approx(plain, rel=1e-12) and got["erm"] == pytest.approx(100.0)
    assert abs(wrong - plain) > 0.5  # the wrong normalisation is told apart at this tolerance


def test_a_checkpoint_glob_skips_checkpoint_zero_files(tmp_path):
    from parity.decisions.rank import expand_checkpoints

    for name in ("reference.pt", "reference.init.pt", "erm.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_checkpoints([str(tmp_path / "*.pt")])] == ["erm.pt", "reference.pt"]


def test_method_groups_from_the_command_line():
    from parity.decisions.rank import parse_method_groups
    from parity.errors import UsageError

    names = ["erm", "erm-s1", "erm-s2", "erm-s3", "fgsm"]
    assert parse_method_groups(["a=erm,erm-s1", "b=erm-s[23]"], names) == {"erm": "a", "erm-s1": "a", "erm-s2": "b", "erm-s3": "b"}
    for bad, msg in ((["a"], "LABEL=PATTERN"), (["a=zzz"], "no ranked checkpoint"), (["a=erm*", "b=erm"], "matches both")):
        with pytest.raises(UsageError, match=msg):
            parse_method_groups(bad, names)
