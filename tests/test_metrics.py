"""Every metric recovers a planted defect of known size, and scores zero when there is none."""
import json

import numpy as np
import pytest

from parity import metrics as M
from parity.cases.synth import Scenario

FPS = 20.0


@pytest.fixture(scope="module")
def curving_gt():
    """GT of a road that curves (clothoid + s-curve) under an ego that weaves: 400 frames, 20 s."""
    scn = Scenario("gt", seed=1, frames=400, fps=FPS, curvature=((0.0, 0.0), (50.0, 1 / 300)), ka=1 / 500,
                   drift_amp_m=0.5, drift_period_s=3.0)
    from parity.cases.synth import EgoState, gt_lanes

    x = np.stack([gt_lanes(scn, EgoState(scn, i / FPS))["x"] for i in range(400)]).astype(np.float64)
    return x, scn.camera.anchor_rows(), np.arange(400) / FPS


def test_perfect_and_offset_predictions_score_zero(curving_gt):
    gt, rows, t = curving_gt
    assert np.nanstd(gt[:, 1, -1]) > 10  # the GT itself curves and swings by tens of pixels
    for pred in (gt, gt + 3.0):  # a constant bias is neither a bend nor a jitter
        b = M.bending(pred, gt, rows)
        assert np.nanmax(b["score"]) < 1e-6 and b["kinks"].sum() == 0
        look = list(M.lookahead_rows(len(rows)).values())
        j = M.jitter(pred[:, :, look], gt[:, :, look], t)
        for k in ("rms", "p95", "oscillation_hz", "flicker_hz"):
            assert np.nanmax(j[k]) < 1e-6, k


@pytest.mark.parametrize("row", [3, 9, 15])
@pytest.mark.parametrize("size", [4.0, 12.0])
def test_planted_kink_is_recovered_in_size_and_row(curving_gt, row, size):
    gt, rows, _ = curving_gt
    pred = gt.copy()
    pred[120, 1, row] += size
    b = M.bending(pred, gt, rows)
    assert b["score"][120, 1] == pytest.approx(size, rel=0.05)
    assert b["row"][120, 1] == row
    assert b["kinks"][120, 1] == (1 if size > M.KINK_PX else 0) + (2 if size / 2 > M.KINK_PX else 0)
    others = np.delete(b["score"].ravel(), 120 * gt.shape[1] + 1)
    assert np.nanmax(others) < 1e-6


def test_uneven_row_spacing_is_normalised():
    rows = np.array([100.0, 110, 130, 160, 200])
    line = 2.0 * rows + 5  # a straight lane sampled at uneven rows
    assert np.allclose(M.chord_deviation(line[None], rows)[0, 1:-1], 0)
    kinked = line.copy()
    kinked[2] += 6.0
    assert M.bending(kinked[None, None], line[None, None], rows)["score"][0, 0] == pytest.approx(6.0)


@pytest.mark.parametrize("amp, freq", [(3.0, 1.0), (1.5, 0.5), (6.0, 2.0)])
def test_planted_oscillation_is_recovered(curving_gt, amp, freq):
    gt, rows, t = curving_gt
    pred = gt.copy()
    pred[:, 2] += amp * np.sin(2 * np.pi * freq * t + 0.3)[:, None]
    look = list(M.lookahead_rows(len(rows)).values())
    j = M.jitter(pred[:, :, look], gt[:, :, look], t)
    ok = np.isfinite(j["amplitude"][2])
    assert ok.sum() >= 2
    np.testing.assert_allclose(j["amplitude"][2][ok], amp, rtol=0.05)
    np.testing.assert_allclose(j["oscillation_hz"][2][ok], freq, rtol=0.05)
    expected_rms = np.sqrt(2) * amp * np.sin(np.pi * freq / FPS)  # RMS of a sampled sinusoid's first difference
    np.testing.assert_allclose(j["rms"][2][ok], expected_rms, rtol=0.05)
    assert np.nanmax(j["rms"][[0, 1, 3]]) < 1e-6  # the other lanes do not swing


def test_dropped_frames_do_not_fake_jitter(curving_gt):
    gt, rows, t = curving_gt
    pred = gt + (0.5 * t)[:, None, None]  # a slow drift: 0.025 px per frame
    keep = np.random.default_rng(0).random(len(t)) > 0.3
    keep[0] = True
    look = list(M.lookahead_rows(len(rows)).values())
    full = M.jitter(pred[:, :, look], gt[:, :, look], t)
    dropped = M.jitter(pred[keep][:, :, look], gt[keep][:, :, look], t[keep])
    np.testing.assert_allclose(np.nanmax(dropped["rms"]), np.nanmax(full["rms"]), rtol=1e-6)
    np.testing.assert_allclose(np.nanmax(full["rms"]), 0.025, rtol=1e-6)


def test_existence_flicker_counts_only_what_the_reference_does_not_do():
    t = np.arange(20) / 10.0
    ref = np.zeros((20, 1, 1))
    ref[10:] = np.nan  # the lane genuinely ends: not flicker
    x = ref.copy()
    x[[3, 5]] = np.nan  # two dropouts = four existence changes
    j = M.jitter(x, ref, t)
    assert j["flicker_hz"][0, 0] == pytest.approx(4 / 1.9)


def test_tusimple_batch_equals_the_per_frame_evaluator():
    rng = np.random.default_rng(1)
    rows = np.linspace(160, 710, 56)
    gt = np.stack([np.linspace(300, 100, 56) + 180 * k for k in range(6)])[None].repeat(300, 0) + rng.normal(0, 2, (300, 6, 56))
    gt[rng.random(gt.shape[:2]) < 0.3] = np.nan  # missing lanes, so frames have 0..6 GT lanes
    gt[:, :, :10][rng.random((300, 6, 10)) < 0.5] = np.nan  # missing points
    pred = gt + rng.normal(0, 8, gt.shape)
    pred[rng.random(gt.shape[:2]) < 0.2] = np.nan
    pred[:50, :, 20:] = gt[:50, :, 20:] + 40  # far off
    np.testing.assert_allclose(M.tusimple_batch(pred, gt, rows, 1280), M.tusimple(pred, gt, rows, 1280), atol=1e-12)


def test_culane_iou_and_f1_by_hand():
    rows = np.arange(100.0, 590.0, 10.0)
    vertical = lambda x: np.full(len(rows), float(x))  # noqa: E731
    gt = np.stack([vertical(400), vertical(800)])[None]
    # vertical 30 px strokes at 1640x590: a 15 px shift leaves about 15 of 45 px: IoU ~1/3 (round caps aside)
    shifted = np.stack([vertical(415), vertical(800)])[None]
    pts = lambda x: np.stack([x, rows], axis=1)  # noqa: E731
    iou = M.lane_masks_iou([pts(shifted[0, 0]), pts(shifted[0, 1])], [pts(gt[0, 0]), pts(gt[0, 1])], 1640, 590)
    assert iou[0, 0] == pytest.approx(1 / 3, abs=0.02) and iou[1, 1] == 1.0 and iou[0, 1] == 0
    assert M.culane_counts(shifted, rows, gt, rows, 1640, 590, 0.5).tolist() == [[1, 1, 1]]
    assert M.culane_counts(shifted, rows, gt, rows, 1640, 590, 0.3).tolist() == [[2, 0, 0]]
    assert M.f1(M.culane_counts(shifted, rows, gt, rows, 1640, 590, 0.5)) == pytest.approx(0.5)


def test_tensor_parity_and_flips():
    a = np.zeros((2, 5, 3, 1))
    a[:, 1] = 1.0
    b = a.copy()
    b[1, 2, 0, 0] = 2.0  # frame 1: one of three classifications flips
    p = M.tensor_parity(a, b)
    assert p["max"].tolist() == [0.0, 2.0] and p["cosine"][0] == pytest.approx(1.0)
    assert M.argmax_flips(a, b).tolist() == [0.0, pytest.approx(1 / 3)]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf, on purpose
def test_p99_is_numpys_percentile_bit_for_bit():
    """raw_p99 from each row's top elements equals np.percentile(d, 99, axis=1) exactly: rows of fp32
    vs fp16 noise, of ties (identical outputs, a third shifted, coarse levels), with NaN (anywhere, not
    only where the sample looks) and inf, and lengths on both sides of the sampled path."""
    from parity.metrics.tensors import percentile_99

    rng = np.random.default_rng(0)
    for n in (22624, 5000, 4096, 4095, 101, 2, 1):
        for kind in ("noise", "nan and inf", "ties", "levels", "many inf"):
            a = rng.normal(0, 3, (16, n)).astype(np.float32)
            b = (a + rng.normal(0, 1e-3, a.shape)).astype(np.float32)
            if kind == "nan and inf":
                a[3, 5 % n], b[5, :], a[5, 0] = np.nan, np.inf, np.inf
            elif kind == "ties":
                b = a.copy()
                b[:8, : n // 3] += 1
            elif kind == "levels":
                a, b = np.round(a * 2) / 2, np.round(a)
            elif kind == "many inf":
                a[:, ::3], b[:, ::5] = np.inf, np.inf
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
            np.testing.assert_array_equal(percentile_99(d), np.percentile(d, 99, axis=1), err_msg=f"{n} {kind}")
    # Rows whose two order statistics around the 99th percentile are given: numpy interpolates from the
    # upper one where the weight is >= 0.5 (22,624 elements: 0.77), and the two ways differ in the last bit.
    n = 22624
    below = int((n - 1) * 0.99)
    lo, hi = rng.uniform(0, 1, 64), rng.uniform(1, 2, 64)
    gamma = (n - 1) * 0.99 - below
    assert (lo + (hi - lo) * gamma != hi - (hi - lo) * (1 - gamma)).any()
    d = np.repeat(hi[:, None], n, axis=1)
    d[:, :below] = rng.uniform(0, 1, (64, below)) * lo[:, None]
    d[:, below] = lo
    np.testing.assert_array_equal(percentile_99(d), np.percentile(d, 99, axis=1))


def _numpy_output_parity(a, b):
    from parity.metrics.tensors import argmax_flips, tensor_parity

    with np.errstate(invalid="ignore", over="ignore"):
        return {**tensor_parity(a, b), "flips": argmax_flips(a, b), "nonfinite": (~np.isfinite(a)).reshape(len(a), -1).mean(axis=1)}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf, on purpose
def test_compiled_output_parity_is_numpys_bit_for_bit():
    """output_parity compiled (one pass a frame: numpy's pairwise sums, a heap of the top values for
    the 99th percentile, argmax with numpy's NaN rule) gives numpy's figures to the bit: noise, NaN and
    inf anywhere, ties, coarse levels, the reference against itself, zeros (cosine NaN), values whose
    squares overflow, lengths around numpy's 8- and 128-element blocks and both sides of 4,096, one
    class or one element a frame. A missing compiled module fails: CI has a compiler."""
    from parity.metrics import tensors

    if tensors.native is None:
        pytest.fail("parity.metrics._tensors did not build (pip install -e . compiles it with the C compiler)")
    rng = np.random.default_rng(5)
    shapes = [(15, 65, 18, 4), (4, 101, 7), (3, 2, 1), (2, 5000), (16, 3, 7542), (1, 1, 1), (5, 9, 5, 2), (7, 3, 1365), (6, 1, 1),
              (3, 129), (3, 135), (2, 257, 1), (4, 7, 1)]
    for shape in shapes:
        for kind in ("noise", "nan and inf", "ties", "levels", "many inf", "same", "zeros", "overflow"):
            a = rng.normal(0, 3, shape).astype(np.float32)
            b = (a + rng.normal(0, 1e-3, shape)).astype(np.float32)
            fa, fb = a.reshape(len(a), -1), b.reshape(len(b), -1)
            n = fa.shape[1]
            if kind == "nan and inf":
                fa[min(3, len(a) - 1), 5 % n], fb[len(a) // 2, :], fa[len(a) // 2, 0] = np.nan, np.inf, np.inf
            elif kind == "ties":
                b = a.copy()
                b.reshape(len(b), -1)[: len(a) // 2, : n // 3] += 1
            elif kind == "levels":
                a, b = np.round(a * 2) / 2, np.round(a)
            elif kind == "many inf":
                fa[:, ::3], fb[:, ::5] = np.inf, np.inf
            elif kind == "same":
                b = a
            elif kind == "zeros":
                a, b = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
            elif kind == "overflow":
                a, b = a * np.float32(1e30), b * np.float32(-1e30)
            got, want = tensors.output_parity(a, b), _numpy_output_parity(a, b)
            assert sorted(got) == sorted(want)
            for k in want:
                np.testing.assert_array_equal(got[k].view(np.int64), want[k].view(np.int64), err_msg=f"{shape} {kind} {k}")


def test_output_parity_takes_numpys_path_where_the_compiled_one_does_not_apply(monkeypatch):
    """float64 or mismatched outputs, and no compiled module at all, go to numpy: the same figures."""
    from parity.metrics import tensors

    rng = np.random.default_rng(6)
    a = rng.normal(size=(3, 5, 4)).astype(np.float32)
    b = a + np.float32(0.01)
    want = _numpy_output_parity(a, b)
    for x, y in ((a.astype(np.float64), b), (a, b.astype(np.float64))):
        got = tensors.output_parity(x, y)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    monkeypatch.setattr(tensors, "native", None)
    got = tensors.output_parity(a, b)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_compiled_output_parity_rejects_buffers_that_do_not_match_its_shape():
    from parity.metrics import tensors

    if tensors.native is None:
        pytest.fail("parity.metrics._tensors did not build (pip install -e . compiles it with the C compiler)")
    a, out = np.zeros((2, 6), np.float32), np.empty((2, 6))
    tensors.native.output_parity(2, 6, 3, a, a, out)
    for args in ((2, 6, 4, a, a, out), (3, 6, 3, a, a, out), (2, 6, 3, a, a[:1], out), (2, 6, 3, a, a, out[:1]), (2, 0, 1, a, a, out)):
        with pytest.raises(ValueError, match="must be float32"):
            tensors.native.output_parity(*args)


def test_metres_per_pixel_from_the_camera():
    cam = {"fx": 520.0, "fy": 520.0, "cx": 319.5, "cy": 179.5, "height_m": 1.5, "pitch_deg": 3.0}
    mpp = M.metres_per_pixel(cam, np.array([200.0, 340.0]), 640)
    assert mpp[0] > mpp[1] > 0  # farther rows: more metres per pixel
    assert M.metres_per_pixel({"fx": 1.0, "fy": 1.0, "cx": 0.0, "cy": 0.0}, np.array([1.0]), 640) is None


def test_score_command_on_tusimple_predictions(tmp_path, tiny_case):
    from parity.cases.format import load_case

    from .conftest import run_cli

    case = load_case(tiny_case)
    lines = []
    for i in range(len(case)):
        lanes = case.gt[i].copy()
        lanes[1, 9] += 12.0  # a kink in every frame's left lane
        lines.append(json.dumps({"raw_file": case.export_name(i), "h_samples": case.anchor_rows.tolist(),
                                 "lanes": [[float(v) if np.isfinite(v) else -2 for v in l] for l in lanes if np.isfinite(l).any()]}))
    (tmp_path / "pred.json").write_text("\n".join(lines))
    res = run_cli("score", "--pred", tmp_path / "pred.json", "--gt", tiny_case, "--out", tmp_path / "s.json")
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "s.json").read_text())["cases"]["tiny"]
    assert s["accuracy"] == pytest.approx(1.0) and s["f1_50"] == pytest.approx(1.0)
    assert s["bend_mean_px"] > 0 and s["kink_rate"] > 0
    bad = run_cli("score", "--pred", tmp_path / "nope.json", "--gt", tiny_case)
    assert bad.returncode == 2 and "no such prediction file" in bad.stderr


def test_a_1hz_swing_reads_1hz_whatever_the_absent_lanes_do():
    """Absent is no value: lanes that are not there (or not at that row) never dilute the rate to ~0.5 Hz."""
    fps, seconds = 20, 60
    t = np.arange(fps * seconds) / fps
    ref = np.zeros((len(t), 4, 3))
    x = ref.copy()
    x[:, 0] += 3 * np.sin(2 * np.pi * t)[:, None]  # 1 Hz on lane 0
    x[:, 1] += 3 * np.sin(2 * np.pi * t)[:, None]  # and on lane 1, which is absent half of the time
    x[len(t) // 2 :, 1] = np.nan
    x[:, 2:], ref[:, 2:] = np.nan, np.nan  # lanes 2, 3: never there
    j = M.jitter(x, ref, t)
    np.testing.assert_allclose(j["oscillation_hz"][:2], 1.0, rtol=0.02)
    assert np.isnan(j["oscillation_hz"][2:]).all() and np.isnan(j["rms"][2:]).all() and np.isnan(j["flicker_hz"][2:]).all()
    assert np.nanmean(j["oscillation_hz"]) == pytest.approx(1.0, rel=0.02)  # what a run value averages


def test_kink_rate_counts_lane_frames_that_have_a_bend_score():
    rows = np.arange(10.0)
    x = np.zeros((4, 2, 10))
    x[0, 0, 5] = 30.0  # one kink
    x[:, 1] = np.nan  # an absent lane: no bending score, not in the denominator
    b = M.bending(x, np.zeros_like(x), rows, kink_px=10.0)
    assert M.kink_rate(b) == pytest.approx(1 / 4)
    assert np.isnan(M.kink_rate(M.bending(np.full((2, 1, 10), np.nan), np.zeros((2, 1, 10)), rows)))


def _deployment_deltas(case_gt, x_torch, x_dep, rows, t):
    """A replay's own scoring of one runner against torch fp32 (scoring.score then aggregate, as replay calls them)."""
    from types import SimpleNamespace

    from parity.metrics import scoring

    case = SimpleNamespace(width=1280, height=720, gt=None, labelled=None, anchor_rows=rows)
    frames = np.arange(len(t))
    sc = scoring.score(case, x_dep, frames, t, x_torch, case_gt, "gt", rows, None, culane=False)
    item = {"x": x_dep, "dx_ref": x_torch, "scored": sc, "case": "c", "frames": frames, "lane_names": ["a", "b", "c", "d"]}
    return sc, scoring.aggregate([item])


def test_deployment_deltas_recover_a_kink_only_the_deployed_runner_makes(curving_gt):
    gt, rows, t = curving_gt
    rng = np.random.default_rng(0)
    x_torch = gt + rng.normal(0, 0.8, gt.shape)  # torch is jagged against GT by itself ...
    x_torch[50, 1, 9] += 35.0  # ... and has its own kink, which the deployed form shares
    x_dep = x_torch.copy()
    x_dep[200, 2, 6] += 30.0  # the kink the engine adds
    sc, agg = _deployment_deltas(gt, x_torch, x_dep, rows, t)
    added = sc.lane_cols["added_bend_px"]
    assert added[200, 2] == pytest.approx(30.0, rel=0.02) and np.nanmax(np.delete(added.ravel(), 200 * 4 + 2)) < 1e-9
    assert added[50, 1] < 1e-9 and sc.lane_cols["bend_px"][50, 1] > 30  # the shared kink is torch's, not the engine's
    assert sc.lane_cols["added_kinks"][200, 2] == 1 and sc.lane_cols["added_kinks"].sum() == 1
    assert agg["added_kink_rate"] == pytest.approx(1 / np.isfinite(added).sum(), rel=1e-9)
    assert agg["added_jitter_rms_near"] < 1e-9 and agg["added_flicker_hz"] == 0
    # the same scoring with the kink in torch too: nothing is added
    _, same = _deployment_deltas(gt, x_dep, x_dep, rows, t)
    assert same["added_bend_p99_px"] == 0 and same["added_kink_rate"] == 0


def test_deployment_deltas_recover_a_1hz_swing_of_deployed_minus_torch():
    rows = np.linspace(300, 700, 18)
    t = np.arange(1800) / 30.0  # 60 s at 30 fps
    base = np.stack([400 + 0.3 * (rows - 300), 800 - 0.3 * (rows - 300)])  # [L, R]
    torch_wobble = 4.0 * np.sin(2 * np.pi * 0.4 * t)  # torch's own swing against GT: not the engine's
    gt = np.broadcast_to(base, (len(t), 2, len(rows))).copy()
    x_torch = gt + torch_wobble[:, None, None]
    amp = 1.5
    x_dep = x_torch + amp * np.sin(2 * np.pi * 1.0 * t)[:, None, None]
    from types import SimpleNamespace

    from parity.metrics import scoring

    case = SimpleNamespace(width=1280, height=720, gt=None, labelled=None, anchor_rows=rows)
    sc = scoring.score(case, x_dep, np.arange(len(t)), t, x_torch, gt, "gt", rows, None, culane=False)
    agg = scoring.aggregate([{"x": x_dep, "dx_ref": x_torch, "scored": sc, "case": "c", "frames": np.arange(len(t)), "lane_names": ["a", "b"]}])
    expected_rms = np.sqrt(2) * amp * np.sin(np.pi * 1.0 / 30.0)  # RMS of the per-frame change of a sinusoid
    for look in ("near", "mid", "far"):
        assert agg[f"added_jitter_rms_{look}"] == pytest.approx(expected_rms, rel=0.02)
    near = [r for r in sc.jitter_rows if r["lookahead"] == "near"]
    assert all(r["added_oscillation_hz"] == pytest.approx(1.0, rel=0.02) for r in near)
    assert all(r["added_amplitude"] == pytest.approx(amp, rel=0.02) for r in near)
    assert agg["jitter_rms_near"] > 1.3 * agg["added_jitter_rms_near"]  # vs GT the model's own 0.4 Hz wobble is in it too
    assert agg["added_bend_p99_px"] < 1e-9  # a rigid swing bends nothing


def test_the_reference_against_itself_gives_what_a_copy_gives():
    """tensor_parity and argmax_flips skip the difference for the reference runner's own outputs
    (the same array): the figures must be those of comparing it with an equal copy, NaN included."""
    from parity.metrics.tensors import argmax_flips, tensor_parity

    rng = np.random.default_rng(3)
    finite = rng.standard_normal((4, 9, 5, 2)).astype(np.float32)
    broken = finite.copy()
    broken[1, 2, 3, 0] = np.nan
    for a in (finite, broken, np.zeros((2, 3, 4), np.float32)):
        with np.errstate(invalid="ignore"):
            own, copy = tensor_parity(a, a), tensor_parity(a, a.copy())
        for k in copy:
            np.testing.assert_array_equal(own[k], copy[k], err_msg=k)
        np.testing.assert_array_equal(argmax_flips(a, a), argmax_flips(a, a.copy()))
    other = finite + np.float32(0.5) * (rng.random(finite.shape) > 0.9)
    assert tensor_parity(finite, other)["max"].max() > 0.4  # a different array is still compared
