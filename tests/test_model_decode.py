import numpy as np
import pytest

from parity.metrics import resample_rows, tusimple_frame
from parity.models.rowanchor import RowAnchorAdapter, RowAnchorConfig


def _onehot(adapter, cells):
    """cells[R, L] (G = absent) -> logits[1, G+1, R, L] strongly peaked on those cells."""
    G = adapter.config.griding
    R, L = cells.shape
    logits = np.full((1, G + 1, R, L), -50.0, np.float32)
    for r in range(R):
        for l in range(L):
            logits[0, cells[r, l], r, l] = 50.0
    return logits


def test_decode_known_cells():
    ad = RowAnchorAdapter(RowAnchorConfig(griding=64))
    R, L = len(ad.config.anchor_rows), 4
    cells = np.tile(np.array([0, 10, 63, 64]), (R, 1))
    x = ad.decode(_onehot(ad, cells), image_width=640)
    assert x.shape == (1, L, R)
    np.testing.assert_allclose(x[0, 0], 0.0, atol=1e-4)
    np.testing.assert_allclose(x[0, 1], 10 * 639 / 63, rtol=1e-5)
    np.testing.assert_allclose(x[0, 2], 639.0, rtol=1e-5)
    assert np.isnan(x[0, 3]).all()  # the last cell means "no lane"


def test_decode_expectation_between_cells():
    ad = RowAnchorAdapter(RowAnchorConfig(griding=8))
    logits = np.full((1, 9, 18, 4), -50.0, np.float32)
    logits[0, 3] = 0.0
    logits[0, 4] = 0.0  # equal mass on cells 3 and 4
    x = ad.decode(logits, image_width=71)
    np.testing.assert_allclose(x, 3.5 * 70 / 7, rtol=1e-5)


def test_no_lane_is_where_argmax_picks_the_last_class():
    """A slot has no lane where argmax over the classes picks the last one (numpy's: the first NaN,
    else the first maximum); decode finds it from the cells' max it needs anyway. Ties, NaN in a cell
    or in the last class, and infinities."""
    from parity.models.rowanchor import _no_lane

    rng = np.random.default_rng(4)
    logits = rng.integers(-2, 3, (400, 6, 3, 2)).astype(np.float32)  # coarse levels: many ties
    flat = logits.reshape(400, 6, -1)
    for k, (frame, cls) in enumerate(rng.integers(0, [400, 6], (120, 2))):
        flat[frame, cls, k % 6] = (np.nan, np.inf, -np.inf)[k % 3]
    cells = logits[:, :5]
    np.testing.assert_array_equal(_no_lane(logits[:, 5], cells.max(axis=1)), logits.argmax(axis=1) == 5)
    assert (logits.argmax(axis=1) == 5).sum() > 100 and np.isnan(logits[:, 5]).any() and np.isnan(cells).any()


def test_targets_invert_decode():
    ad = RowAnchorAdapter()
    gt = np.full((1, 4, 18), np.nan, np.float32)
    gt[0, 1] = np.linspace(100, 300, 18)
    cells = ad.targets(gt, 640)
    assert cells.shape == (1, 18, 4)
    assert (cells[0, :, 0] == 64).all()
    x = ad.decode(_onehot(ad, cells[0]), 640)
    assert np.nanmax(np.abs(x[0, 1] - gt[0, 1])) <= 639 / 63 / 2 + 1e-3


ROWS = np.arange(10, 60, 10, dtype=float)  # 5 rows


def test_tusimple_perfect_and_shifted():
    gt = np.array([[100, 110, 120, 130, 140], [300, 290, 280, 270, 260]], float)
    assert tusimple_frame(gt, gt, ROWS, 1280) == (1.0, 0.0, 0.0)
    acc, fp, fn = tusimple_frame(gt + np.array([[40.0], [0.0]]), gt, ROWS, 1280)
    assert (acc, fp, fn) == (0.5, 0.5, 0.5)


def test_tusimple_threshold_scales_with_width_and_angle():
    gt = np.array([[100, 100, 100, 100, 100.0]])
    assert tusimple_frame(gt + 15, gt, ROWS, 1280)[0] == 1.0  # 15 < 20 px at 1280 wide
    assert tusimple_frame(gt + 15, gt, ROWS, 640)[0] == 0.0  # 15 > 10 px at 640 wide
    slanted = np.array([[100, 110, 120, 130, 140.0]])  # slope 1 px/px: threshold 20/cos(45 deg) = 28.3
    assert tusimple_frame(slanted + 25, slanted, ROWS, 1280)[0] == 1.0


def test_tusimple_missing_points_count_as_in_the_official_evaluator():
    gt = np.array([[np.nan, 110, 120, 130, 140]])
    pred = np.array([[np.nan, 110, 120, 130, np.nan]])
    # absent in both = correct (4/5 counted incl. row 0); absent in pred only = wrong -> 4/5 = 0.8 < 0.85
    acc, fp, fn = tusimple_frame(pred, gt, ROWS, 1280)
    assert acc == pytest.approx(0.8) and fn == 1.0 and fp == 1.0


def test_tusimple_more_than_four_gt_lanes_drops_the_worst():
    gt = np.array([[x] * 5 for x in (100.0, 300, 500, 700, 900)])
    pred = gt[:4]
    acc, fp, fn = tusimple_frame(pred, gt, ROWS, 1280)
    assert (acc, fp, fn) == (1.0, 0.0, 0.0)


def test_resample_rows_interpolates_and_marks_outside():
    x = np.array([[[0.0, 10.0, 20.0]]])
    out = resample_rows(x, np.array([0.0, 10.0, 20.0]), np.array([5.0, 15.0, 25.0]))
    np.testing.assert_allclose(out[0, 0, :2], [5.0, 15.0])
    assert np.isnan(out[0, 0, 2])
