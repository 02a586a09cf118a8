import hashlib

import numpy as np
import pytest

from parity.cases.format import load_case
from parity.cases.camera import Camera
from parity.cases.synth import LANE_NAMES, Renderer, Scenario, Vehicle, render, write_case


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic(tmp_path, tiny_scenario):
    a = write_case(tiny_scenario, tmp_path / "a")
    b = write_case(tiny_scenario, tmp_path / "b")
    assert _digest(a) == _digest(b)
    other = write_case(Scenario("tiny", seed=8, frames=6, fps=10.0), tmp_path / "c")
    assert _digest(other) != _digest(a)


def test_written_case_validates(tiny_case):
    case = load_case(tiny_case)
    assert len(case) == 6
    assert case.streams == ["nv12", "jpeg"]
    assert case.gt.shape == (6, len(LANE_NAMES), 18)
    assert case.read(0, "nv12").shape == (540, 640)
    assert case.read(0, "jpeg").shape == (360, 640, 3)


@pytest.mark.parametrize(
    "scn",
    [
        Scenario("straight", seed=1, dash_m=40.0, gap_m=0.5, drift_amp_m=0.0),
        # A double line is symmetric about its GT only where a row has one depth (no roll).
        Scenario("curved_drift_double", seed=2, curvature=((0.0, 1 / 300),), ka=1 / 500, drift_amp_m=0.5, lanes=4,
                 start_lane=1, markings=("solid", "double", "dashed", "dashed", "solid"), dash_m=40.0, gap_m=0.5),
        Scenario("clothoid_roll", seed=3, curvature=((0.0, 0.0), (40.0, -1 / 250)), camera=Camera(roll_deg=2.0, pitch_deg=3.4),
                 lanes=2, start_lane=0, width_var_m=0.3, dash_m=40.0, gap_m=0.5),
        Scenario("lane_change", seed=4, lanes=3, start_lane=0, lane_changes=((0.5, 1),),
                 dash_m=40.0, gap_m=0.5, fps=10.0),
    ],
    ids=lambda s: s.name,
)
def test_gt_lands_on_paint(scn):
    """Luminance centroid of the painted marking at each anchor row is within 1 px of the projected GT."""
    checked = 0
    renderer = Renderer(scn)
    for frame in (0, 17, 33):
        rgb, gt = renderer.frame(frame, clean=True)
        gt = gt["x"]
        lum = rgb.astype(np.float64).mean(axis=2)
        rows = scn.camera.anchor_rows()
        for lane in range(gt.shape[0]):
            for r, x in zip(rows, gt[lane]):
                if not np.isfinite(x) or x < 15 or x > rgb.shape[1] - 16:
                    continue
                v = int(round(r))
                _, _, _, depth = scn.camera.ground(np.array([x]), np.array([float(v)]))
                # a double line spans 0.3 m + two stripes; the window must hold all of it
                span = scn.marking_width_m * 3 + 0.3 if "double" in scn.markings else scn.marking_width_m
                half = int(np.ceil(span * scn.camera.fx / depth[0])) + 4
                lo, hi = int(np.floor(x)) - half, int(np.ceil(x)) + half + 1
                if lo < 6 or hi + 6 > rgb.shape[1]:
                    continue
                prof = lum[v, lo:hi]
                bg = np.median(np.r_[lum[v, lo - 6 : lo], lum[v, hi : hi + 6]])
                w = np.clip(prof - bg - 0.4 * (prof.max() - bg), 0, None)
                if prof.max() - bg < 25:  # no paint at this row (a dash gap, out of the headlights)
                    continue
                centroid = (w * np.arange(lo, hi)).sum() / w.sum()
                assert abs(centroid - x) < 1.0, (scn.name, frame, lane, r, centroid, x)
                checked += 1
    assert checked > 40


def test_lanes_move_with_ego_drift():
    scn = Scenario("weave", seed=3, drift_amp_m=0.5, drift_period_s=2.0, fps=10.0)
    xs = np.stack([render(scn, i, clean=True)[1] for i in range(0, 20)])
    near = xs[:, LANE_NAMES.index("left"), -1]
    assert np.nanmax(near) - np.nanmin(near) > 20  # 1 m of weave is tens of pixels at the bottom row


def test_gt_points_project_back_to_gt_pixels():
    scn = Scenario("p", seed=5, curvature=((0.0, 1 / 400),), camera=Camera(roll_deg=-1.5), drift_amp_m=0.5)
    _, gt = Renderer(scn).frame(12, clean=True)
    pts = gt["xyz"]  # ISO 8855: x forward, y left, z up
    ok = np.isfinite(gt["x"])
    u, v, front = scn.camera.project(-pts[..., 1], pts[..., 0])
    assert ok.sum() > 30 and front[ok].all()
    np.testing.assert_allclose(u[ok], gt["x"][ok], atol=0.05)
    np.testing.assert_allclose(v[ok], np.broadcast_to(scn.camera.anchor_rows(), ok.shape)[ok], atol=0.05)


def test_lane_change_relabels_lanes():
    scn = Scenario("lc", seed=6, lanes=3, start_lane=0, lane_changes=((0.0, 1),), lane_change_s=2.0, drift_amp_m=0.0, fps=10.0)
    r = Renderer(scn)
    before, after = r.frame(0, clean=True)[1]["x"], r.frame(30, clean=True)[1]["x"]
    assert np.isnan(before[0]).all()  # in the leftmost lane there is no left_left lane
    assert np.isfinite(after[0]).any()  # one lane to the right, there is
    # The old ego-right boundary is the new ego-left one: at the bottom row it sits near the centre, then left.
    assert abs(after[1, -1] - before[2, -1]) > 100


def test_merge_ends_the_rightmost_boundary():
    scn = Scenario("m", seed=7, lanes=2, start_lane=0, merge=(0.0, 20.0), drift_amp_m=0.0)
    gt = Renderer(scn).frame(40, clean=True)[1]["x"]  # 44 m down the road, past the merge
    assert np.isnan(gt[LANE_NAMES.index("right_right")]).all()
    assert np.isfinite(gt[LANE_NAMES.index("right")]).any()


def test_conditions_change_the_pixels():
    base = dict(seed=8, frames=1, drift_amp_m=0.0, noise_sigma=0.0)
    day = render(Scenario("d", **base), 0)[0].astype(float)
    night = render(Scenario("n", lighting="night", **base), 0)[0].astype(float)
    rain = render(Scenario("r", rain=0.8, **base), 0)[0].astype(float)
    traffic = render(Scenario("t", vehicles=(Vehicle(1, 12.0),), **base), 0)[0].astype(float)
    assert night.mean() < 0.4 * day.mean()
    assert np.abs(rain - day).mean() > 3
    assert (np.abs(traffic - day).sum(axis=2) > 30).mean() > 0.005
