"""End to end against the official evaluators' rules: a replay's own figures, its exported predictions
scored by a plain transcription of TuSimple's LaneEval (written here, independent of parity's
vectorised code), and `parity score` on the same file must agree to 1e-9.

The transcription follows tusimple-benchmark's evaluate/lane.py line by line; its only change is the
documented one: the 20 px threshold is for 1280 px wide images, so it scales with the width.
"""
import json

import numpy as np
import pytest

from parity.cases.format import load_case
from parity.cases.synth import write_case

from .conftest import _tiny_scenario, run_cli


# ---- tusimple-benchmark evaluate/lane.py, transcribed -------------------------------------------
class OfficialLaneEval:
    pt_thresh = 0.85

    def __init__(self, image_width):
        self.pixel_thresh = 20 * image_width / 1280

    @staticmethod
    def get_angle(xs, y_samples):
        xs, ys = xs[xs >= 0], y_samples[xs >= 0]
        if len(xs) > 1:
            k = np.polyfit(ys, xs, 1)[0]  # the official LinearRegression's slope
            theta = np.arctan(k)
        else:
            theta = 0
        return theta

    @staticmethod
    def line_accuracy(pred, gt, thresh):
        pred = np.array([p if p >= 0 else -100 for p in pred])
        gt = np.array([g if g >= 0 else -100 for g in gt])
        return np.sum(np.where(np.abs(pred - gt) < thresh, 1.0, 0.0)) / len(gt)

    def bench(self, pred, gt, y_samples, running_time):
        if any(len(p) != len(y_samples) for p in pred):
            raise Exception("Format of lanes error.")
        if running_time > 200 or len(gt) + 2 < len(pred):
            return 0.0, 0.0, 1.0
        angles = [self.get_angle(np.array(x_gts), np.array(y_samples)) for x_gts in gt]
        threshs = [self.pixel_thresh / np.cos(angle) for angle in angles]
        line_accs = []
        fp, fn = 0.0, 0.0
        matched = 0.0
        for x_gts, thresh in zip(gt, threshs):
            accs = [self.line_accuracy(np.array(x_preds), np.array(x_gts), thresh) for x_preds in pred]
            max_acc = np.max(accs) if len(accs) > 0 else 0.0
            if max_acc < self.pt_thresh:
                fn += 1
            else:
                matched += 1
            line_accs.append(max_acc)
        fp = len(pred) - matched
        if len(gt) > 4 and fn > 0:
            fn -= 1
        s = sum(line_accs)
        if len(gt) > 4:
            s -= min(line_accs)
        return s / max(min(4.0, len(gt)), 1.0), fp / len(pred) if len(pred) > 0 else 0.0, fn / max(min(len(gt), 4.0), 1.0)

    def bench_one_submit(self, pred_file, gt_file):
        json_pred = [json.loads(line) for line in open(pred_file).readlines()]
        json_gt = [json.loads(line) for line in open(gt_file).readlines()]
        if len(json_gt) != len(json_pred):
            raise Exception("We do not get the predictions of all the test tasks")
        gts = {line["raw_file"]: line for line in json_gt}
        accuracy, fp, fn = 0.0, 0.0, 0.0
        for pred in json_pred:
            if "raw_file" not in pred or "lanes" not in pred or "run_time" not in pred:
                raise Exception("raw_file or lanes or run_time not in some predictions.")
            raw_file = pred["raw_file"]
            if raw_file not in gts:
                raise Exception("Some raw_file from your predictions do not exist in the test tasks.")
            gt = gts[raw_file]
            a, p, n = self.bench(pred["lanes"], gt["lanes"], gt["h_samples"], pred["run_time"])
            accuracy += a
            fp += p
            fn += n
        num = len(gts)
        return accuracy / num, fp / num, fn / num


def gt_file(cases, path):
    """The cases' GT as a TuSimple label file, written here from the raw case arrays (not by parity's exporter)."""
    lines = []
    for case in cases:
        for i in np.flatnonzero(case.labelled):
            lanes = [[float(v) if np.isfinite(v) else -2 for v in lane] for lane in case.gt[i] if np.isfinite(lane).any()]
            lines.append(json.dumps({"raw_file": case.export_name(i), "lanes": lanes, "h_samples": case.anchor_rows.tolist()}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    """Two recordings whose files are named alike (frames/000000.nv12 ...), as every synthetic case's are."""
    root = tmp_path_factory.mktemp("two")
    # tiny_b curves the other way and weaves more: a model fitted to tiny_a is right there and wrong here
    return [write_case(_tiny_scenario("tiny_a", seed=7), root / "tiny_a"),
            write_case(_tiny_scenario("tiny_b", seed=11, frames=8, curvature=((0.0, -1 / 150),), drift_amp_m=1.2), root / "tiny_b")]


@pytest.fixture(scope="module")
def fitted_checkpoint(two_cases, tmp_path_factory):
    """A model fitted to the first case only (to convergence, so the outcome does not hang on a 1-LSB change
    in preprocessing): right on its lanes, wrong on many of the other's."""
    from parity.training.loop import train

    return train([two_cases[0]], tmp_path_factory.mktemp("fit") / "fit.pt", epochs=40, batch_size=6, lr=3e-3, progress=False)


@pytest.fixture(scope="module")
def replayed(two_cases, fitted_checkpoint, tmp_path_factory):
    from parity.runs.replay import ReplayConfig, replay

    out = tmp_path_factory.mktemp("run")
    res = replay(ReplayConfig(cases=[str(c) for c in two_cases], checkpoint=str(fitted_checkpoint.path), runners="torch",
                              pipelines="vehicle", out=str(out), progress=False, cache_dir=str(out / "cache")))
    assert res.exit_code == 0, res.summary["errors"]
    return res


def test_replay_export_and_score_agree_with_the_official_tusimple_rules(two_cases, replayed, tmp_path):
    cases = [load_case(c) for c in two_cases]
    pred = tmp_path / "pred.json"
    res = run_cli("export", "--run", replayed.out, "--runner", "torch", "--pipeline", "vehicle", "--format", "tusimple",
                  "--only-labelled", "--out", pred)
    assert res.returncode == 0, res.stderr
    names = [json.loads(line)["raw_file"] for line in pred.read_text().splitlines()]
    assert len(names) == len(set(names)) == sum(int(c.labelled.sum()) for c in cases)  # unique across the two cases

    official = OfficialLaneEval(cases[0].width).bench_one_submit(pred, gt_file(cases, tmp_path / "gt.json"))
    mine = next(r for r in replayed.summary["results"] if r["runner"] == "torch")
    assert 0.2 < official[0] < 1.0  # a non-trivial mix of hits and misses
    np.testing.assert_allclose([mine["accuracy"], mine["fp"], mine["fn"]], official, atol=1e-9, rtol=0)

    scored = run_cli("score", "--pred", pred, "--gt", *two_cases, "--out", tmp_path / "s.json")
    assert scored.returncode == 0, scored.stderr
    o = json.loads((tmp_path / "s.json").read_text())["overall"]
    np.testing.assert_allclose([o["accuracy"], o["fp"], o["fn"]], official, atol=1e-9, rtol=0)


def test_gt_points_are_not_lost_between_float_row_sets(two_cases):
    """Model rows computed in floating point differ from the case's by ~1e-13: the points are copied."""
    from parity.cases.lanes import resample_rows
    from parity.models.rowanchor import RowAnchorAdapter

    case = load_case(two_cases[0])
    rows = RowAnchorAdapter().anchor_rows(case.height)
    assert np.abs(rows - case.anchor_rows).max() < 1e-3
    moved = resample_rows(case.gt, case.anchor_rows, rows)
    np.testing.assert_array_equal(np.isfinite(moved), np.isfinite(case.gt))
    back = resample_rows(resample_rows(case.gt, case.anchor_rows, case.anchor_rows + 1e-9), case.anchor_rows + 1e-9, case.anchor_rows)
    np.testing.assert_array_equal(back, case.gt)


def _line(name, lanes, h, run_time=None):
    rec = {"raw_file": name, "lanes": lanes, "h_samples": h}
    if run_time is not None:
        rec["run_time"] = run_time
    return json.dumps(rec)


def _perfect(case, order=slice(None), run_time=None):
    out = []
    for i in range(len(case)):
        lanes = [[float(v) if np.isfinite(v) else -2 for v in lane[order]] for lane in case.gt[i] if np.isfinite(lane).any()]
        out.append(_line(case.export_name(i), lanes, case.anchor_rows[order].tolist(), run_time))
    return out


def test_score_reads_bottom_up_h_samples(two_cases, tmp_path):
    case = load_case(two_cases[0])
    (tmp_path / "p.json").write_text("\n".join(_perfect(case, slice(None, None, -1))))
    res = run_cli("score", "--pred", tmp_path / "p.json", "--gt", two_cases[0], "--out", tmp_path / "s.json")
    assert res.returncode == 0, res.stderr
    o = json.loads((tmp_path / "s.json").read_text())["overall"]
    assert (o["accuracy"], o["fp"], o["fn"]) == (1.0, 0.0, 0.0)


def test_score_applies_the_official_run_time_rule(two_cases, tmp_path):
    case = load_case(two_cases[0])
    (tmp_path / "p.json").write_text("\n".join(_perfect(case, run_time=250.0)))
    res = run_cli("score", "--pred", tmp_path / "p.json", "--gt", two_cases[0], "--out", tmp_path / "s.json")
    o = json.loads((tmp_path / "s.json").read_text())["overall"]
    assert res.returncode == 0 and (o["accuracy"], o["fp"], o["fn"]) == (0.0, 0.0, 1.0) and "200 ms" in res.stdout
    res = run_cli("score", "--pred", tmp_path / "p.json", "--gt", two_cases[0], "--ignore-run-time", "--out", tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["overall"]["accuracy"] == 1.0


def test_negative_x_is_a_missing_point_and_listed_empty_lanes_count(two_cases, tmp_path):
    case = load_case(two_cases[0])
    lines = []
    for i in range(len(case)):
        lanes = [[float(v) if np.isfinite(v) else -2 for v in lane] for lane in case.gt[i] if np.isfinite(lane).any()]
        lanes[0] = [-5.0 if k % 2 else v for k, v in enumerate(lanes[0])]  # half the points of one lane: absent (x < 0)
        lanes += [[-2] * len(case.anchor_rows)] * 3  # three listed lanes with no point: more than GT + 2 lanes in all
        lines.append(_line(case.export_name(i), lanes, case.anchor_rows.tolist()))
    (tmp_path / "p.json").write_text("\n".join(lines))
    cases = [case]
    official = OfficialLaneEval(case.width)
    official_scores = official.bench_one_submit  # needs run_time: add it
    (tmp_path / "o.json").write_text("\n".join(json.dumps({**json.loads(line), "run_time": 1}) for line in lines))
    expected = official_scores(tmp_path / "o.json", gt_file(cases, tmp_path / "gt.json"))
    res = run_cli("score", "--pred", tmp_path / "p.json", "--gt", two_cases[0], "--out", tmp_path / "s.json")
    assert res.returncode == 0, res.stderr
    o = json.loads((tmp_path / "s.json").read_text())["overall"]
    np.testing.assert_allclose([o["accuracy"], o["fp"], o["fn"]], expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("mutate, message", [
    (lambda lines: lines + lines[:1], "already given on line 1"),
    (lambda lines: lines[1:], "no prediction for 1 labelled frames"),
    (lambda lines: lines + [_line("elsewhere/000000.jpg", [], [1.0])], "no frame of the given cases"),
    (lambda lines: [lines[0].replace('"raw_file"', '"file"')] + lines[1:], "KeyError"),
    (lambda lines: [lines[0].replace('"lanes": [[', '"lanes": [["a", ')] + lines[1:], "not a TuSimple prediction line"),
])
def test_score_refuses_what_the_official_evaluator_refuses(two_cases, tmp_path, mutate, message):
    case = load_case(two_cases[0])
    (tmp_path / "p.json").write_text("\n".join(mutate(_perfect(case))))
    res = run_cli("score", "--pred", tmp_path / "p.json", "--gt", two_cases[0])
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_exporting_two_cases_with_one_frame_name_is_refused(two_cases, tmp_path):
    """A recording given twice (a copied folder keeps its case name): scoring it would be a guess."""
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(two_cases[0], twin)
    res = run_cli("export", "--gt", two_cases[0], twin, "--format", "tusimple", "--out", tmp_path / "gt.json")
    assert res.returncode == 2 and "a name already used by case 'tiny_a'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "gt.json").exists()


def test_replay_f1_equals_the_official_culane_rules_on_its_export(two_cases, replayed, tmp_path):
    """The replay's F1, and its `.lines.txt` export read back and scored by the transcribed CULane evaluator
    (tests/test_culane.py), with GT lanes drawn from the raw case arrays."""
    from .test_culane import as_official_lanes, official_counts

    out = tmp_path / "culane"
    res = run_cli("export", "--run", replayed.out, "--runner", "torch", "--pipeline", "vehicle", "--format", "culane",
                  "--only-labelled", "--out", out)
    assert res.returncode == 0, res.stderr
    totals = {0.5: np.zeros(3), 0.3: np.zeros(3)}
    for case in (load_case(c) for c in two_cases):
        for i in np.flatnonzero(case.labelled):
            f = out / (case.export_name(i).rsplit(".", 1)[0] + ".lines.txt")
            detect = []
            for line in f.read_text().splitlines():
                v = [float(s) for s in line.split()]
                detect.append([(v[k] * 1640 / case.width, v[k + 1] * 590 / case.height) for k in range(0, len(v), 2)])
            anno = as_official_lanes(case.gt[i], case.anchor_rows, case.width, case.height)
            for thr in totals:
                totals[thr] += official_counts(anno, detect, thr)
    mine = next(r for r in replayed.summary["results"] if r["runner"] == "torch")
    for thr, key in ((0.5, "f1_50"), (0.3, "f1_30")):
        tp, fp, fn = totals[thr]
        assert mine[key] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12), (thr, totals[thr], mine[key])
    assert totals[0.3][0] > 0 and totals[0.3][1] + totals[0.3][2] > 0  # a non-trivial mix
