import numpy as np
import pytest

from parity.cases.format import load_case
from parity.colour import nv12_to_rgb, rgb_to_nv12
from parity.models.rowanchor import RowAnchorAdapter


def test_limited_range_levels():
    img = np.zeros((2, 2, 3), np.uint8)
    assert rgb_to_nv12(img)[:2].max() == 16  # black is Y=16 in limited range
    assert rgb_to_nv12(img + 255)[:2].min() == 235  # white is Y=235
    assert rgb_to_nv12(img + 255, yuv_range="full")[:2].min() == 255


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("rng_", ["limited", "full"])
def test_nv12_round_trip_on_smooth_image(matrix, rng_):
    yy, xx = np.mgrid[0:64, 0:96]
    rgb = np.stack([xx * 2.5, yy * 3.5, 200 - xx], axis=-1).clip(0, 255).astype(np.uint8)
    back = nv12_to_rgb(rgb_to_nv12(rgb, matrix, rng_), matrix, rng_)
    assert np.abs(back.astype(int) - rgb).max() <= 4  # chroma subsampling of a smooth ramp + rounding


def test_wrong_matrix_or_range_shifts_colour():
    rgb = np.full((4, 4, 3), (0, 200, 0), np.uint8)
    nv12 = rgb_to_nv12(rgb, "bt601", "limited")
    assert np.abs(nv12_to_rgb(nv12, "bt601", "limited")[0, 0].astype(int) - (0, 200, 0)).max() <= 1
    assert nv12_to_rgb(nv12, "bt709", "limited")[0, 0, 1] < 175  # green loses ~30 levels
    assert nv12_to_rgb(nv12, "bt601", "full")[0, 0, 0] > 10  # range mismatch lifts black


def test_training_and_vehicle_pipelines_differ(tiny_case):
    case = load_case(tiny_case)
    pipes = RowAnchorAdapter().pipelines()
    a = pipes["training"].prepare(case, [0, 1])
    b = pipes["vehicle"].prepare(case, [0, 1])
    assert a.shape == b.shape == (2, 3, 112, 288) and a.dtype == np.float32
    diff = np.abs(a - b)
    assert diff.mean() > 0.02  # really different inputs...
    assert diff.mean() < 0.5  # ...of the same scene
    assert pipes["training"].stream_for(case) == "jpeg" and pipes["vehicle"].stream_for(case) == "nv12"


@pytest.mark.parametrize("offset", [(0, 0), (40, -150), (-25, 30), (700, 0)])
def test_crop_offset_and_resize_fold_into_one_map(offset):
    """Cropping (with the edge repeated outside the frame) then resizing equals the folded weights."""
    from dataclasses import replace

    from parity.preprocessing.resample import resize

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, 360, 640, 3), dtype=np.uint8)
    pipe = replace(RowAnchorAdapter().pipelines()["vehicle"], crop_offset=offset)
    top, bottom, left, right = pipe.crop_box(360, 640)
    rows, cols = np.clip(np.arange(top, bottom), 0, 359), np.clip(np.arange(left, right), 0, 639)
    crop = frame[:, rows][:, :, cols].astype(np.float32)
    r = pipe.resize
    want = np.floor(resize(crop, pipe.size, r.kernel, r.antialias, r.pixel_centre, r.cubic_a) + 0.5)
    want = ((want / 255.0 - np.float32(pipe.mean)) / np.float32(pipe.std)).transpose(0, 3, 1, 2)
    got = pipe.apply(frame)
    level = 1 / 255 / min(pipe.std)  # one 8-bit level: a value at exactly .5 may round either way
    np.testing.assert_allclose(got, want, atol=level + 1e-4)
    assert (np.abs(got - want) < 1e-4).mean() > 0.999


def test_decoding_only_the_cropped_rows_equals_decoding_the_frame_then_cropping():
    rng = np.random.default_rng(3)
    nv12 = rng.integers(0, 256, (360 * 3 // 2, 640), dtype=np.uint8)
    for chroma in ("nearest", "bilinear"):
        whole = nv12_to_rgb(nv12, "bt601", "limited", chroma)
        for rows in ((136, 360), (137, 359), (0, 1), (1, 2), (359, 360)):
            np.testing.assert_array_equal(nv12_to_rgb(nv12, "bt601", "limited", chroma, rows=rows), whole[rows[0] : rows[1]])


@pytest.mark.parametrize("path", ["compiled", "numpy"])
def test_nv12_nearest_gives_the_definition_bit_for_bit(path, monkeypatch):
    """However NV12 with nearest chroma is converted (compiled, or numpy plane by plane), each pixel is
    clip(rint(y' * inv[k, 0] + (u' * inv[k, 1] + v' * inv[k, 2])), 0, 255) with y' = Y * (255 / ys) -
    off * 255 / ys and u' = (U - 128) * (255 / cs), each step rounded to float32: the same 8-bit
    levels, so a faster conversion changes no figure. A missing compiled module fails: CI has a compiler."""
    from parity import colour

    if path == "numpy":
        monkeypatch.setattr(colour, "native", None)
    elif colour.native is None:
        pytest.fail("parity._colour did not build (pip install -e . compiles it with the C compiler)")

    def definition(nv12, matrix, yuv_range):
        h = nv12.shape[0] * 2 // 3
        off, ys, cs = colour.range_scale(yuv_range)
        inv = np.linalg.inv(colour.rgb_to_yuv_matrix(matrix)).astype(np.float32)
        y = nv12[:h].astype(np.float32) * np.float32(255.0 / ys) - np.float32(off * 255.0 / ys)
        uv = (nv12[h:].reshape(h // 2, -1, 2).astype(np.float32) - np.float32(128)) * np.float32(255.0 / cs)
        uv = uv.repeat(2, axis=0).repeat(2, axis=1)
        rgb = [y * inv[k, 0] + (uv[..., 0] * inv[k, 1] + uv[..., 1] * inv[k, 2]) for k in range(3)]
        return np.clip(np.rint(np.stack(rgb, axis=-1)), 0, 255).astype(np.uint8)

    rng = np.random.default_rng(11)
    for h, w in ((360, 640), (2, 2), (6, 10), (48, 34)):
        nv12 = rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)
        for matrix in ("bt601", "bt709", (0.25, 0.1)):
            for yuv_range in ("limited", "full"):
                want = definition(nv12, matrix, yuv_range)
                np.testing.assert_array_equal(nv12_to_rgb(nv12, matrix, yuv_range), want, err_msg=f"{h}x{w} {matrix} {yuv_range}")
                for rows in ((0, 1), (1, h), (h // 2 - 1, h // 2 + 1), (h - 1, h)):
                    got = nv12_to_rgb(np.asfortranarray(nv12), matrix, yuv_range, rows=rows)  # a non-contiguous frame too
                    np.testing.assert_array_equal(got, want[rows[0] : rows[1]], err_msg=f"{h}x{w} {matrix} {yuv_range} {rows}")


def test_compiled_nv12_rejects_buffers_that_do_not_match_the_frame():
    """The C code checks the frame's and the output's sizes and the rows: a bad one is a ValueError,
    never a read or a write past a buffer."""
    from parity import colour

    if colour.native is None:
        pytest.fail("parity._colour did not build (pip install -e . compiles it with the C compiler)")
    nv12, inv = np.zeros((6, 4), np.uint8), np.eye(3, dtype=np.float32)
    colour.native.nv12_nearest(nv12, 4, 4, 1, 3, 1.0, 0.0, 1.0, inv, np.empty((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="NV12 frame's bytes"):
        colour.native.nv12_nearest(nv12, 6, 4, 1, 3, 1.0, 0.0, 1.0, inv, np.empty((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="out must be"):
        colour.native.nv12_nearest(nv12, 4, 4, 1, 5, 1.0, 0.0, 1.0, inv, np.empty((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="out must be"):
        colour.native.nv12_nearest(nv12, 4, 4, 1, 3, 1.0, 0.0, 1.0, inv, np.empty((1, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="3x3"):
        colour.native.nv12_nearest(nv12, 4, 4, 1, 3, 1.0, 0.0, 1.0, inv[:2], np.empty((2, 4, 3), np.uint8))


def test_pipelines_read_only_the_rows_they_keep_and_give_the_whole_frame_result(tiny_case):
    from parity.cases.format import load_case
    from parity.models.rowanchor import RowAnchorAdapter

    case = load_case(tiny_case)
    for pipe in RowAnchorAdapter().pipelines().values():
        cropped = pipe.prepare(case, [0, 3])
        whole = pipe.apply(np.stack([pipe.decode(case, i, pipe.stream_for(case)) for i in (0, 3)]))
        np.testing.assert_array_equal(cropped, whole)
        r0, r1 = pipe.rows_read(case.height, case.width)
        assert 0 < r0 < r1 <= case.height  # the sky above the crop is never decoded


def test_taps_apply_exactly_the_dense_weights():
    from parity.preprocessing.resample import apply_taps, taps, weights

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (2, 50, 70, 3)).astype(np.float32)
    for kernel, aa, centre in (("bilinear", False, "align_corners"), ("bilinear", True, "half_pixel"), ("bicubic", False, "half_pixel"),
                               ("lanczos3", True, "half_pixel"), ("area", False, "half_pixel"), ("nearest", False, "asymmetric")):
        Wy, Wx = weights(50, 23, kernel, aa, centre), weights(70, 31, kernel, aa, centre)
        dense = np.einsum("yh,xw,nhwc->nyxc", Wy, Wx, img.astype(np.float64))
        got = apply_taps(img, taps(Wy), taps(Wx))
        np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-3)
        assert taps(Wx)[0].shape[1] <= 2 * 4 * 70 / 31 + 2  # only the kernel's support is touched


@pytest.mark.parametrize("path", ["compiled", "numpy"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf x 0 is NaN, on purpose
def test_taps_give_the_definition_bit_for_bit(path, monkeypatch):
    """However apply_taps gathers (compiled, or numpy's OpenCV-transposed rows, frame by frame), each
    output is sum_k w[k] * float32(x[idx[k]]) in k order, horizontal pass first: the exact float32
    numbers the definition gives, so a faster gather changes no figure. A missing compiled module
    fails: CI has a compiler."""
    from parity.preprocessing import resample
    from parity.preprocessing.resample import apply_taps, taps, weights

    if path == "numpy":
        monkeypatch.setattr(resample, "native", None)
    elif resample.native is None:
        pytest.fail("parity.preprocessing._taps did not build (pip install -e . compiles it with the C compiler)")

    def definition(img, ty, tx, pil):
        def one_pass(x, t, axis):
            idx, w = t
            shape = [1] * x.ndim
            shape[axis] = -1
            out = np.take(x, idx[:, 0], axis=axis).astype(np.float32) * w[:, 0].reshape(shape)
            for k in range(1, idx.shape[1]):
                out += np.take(x, idx[:, k], axis=axis).astype(np.float32) * w[:, k].reshape(shape)
            return out

        x = one_pass(img, tx, img.ndim - 2)
        if pil:
            x = np.clip(np.floor(x + 0.5), 0, 255).astype(np.float32)
        return one_pass(x, ty, img.ndim - 3)

    rng = np.random.default_rng(9)
    for shape, sub in (((2, 60, 90, 3), np.s_[:, 5:, 3:]), ((45, 70, 3), np.s_[:]), ((2, 2, 40, 30, 1), np.s_[...]), ((1, 33, 47, 4), np.s_[:])):
        for dtype in (np.uint8, np.float32, "float32, negative, NaN and inf"):
            if isinstance(dtype, str):  # a perturbed or normalised frame: every float, the special ones too
                img = rng.normal(0, 300, shape).astype(np.float32)
                img.flat[::97], img.flat[::89], img.flat[::83] = np.nan, np.inf, -np.inf
                img = img[sub]
            else:
                img = rng.integers(0, 256, shape).astype(dtype)[sub]
            H, W = img.shape[-3], img.shape[-2]
            for kernel, aa, centre in (("bilinear", False, "align_corners"), ("bicubic", False, "half_pixel"), ("lanczos4", False, "half_pixel"),
                                       ("lanczos3", True, "half_pixel"), ("area", False, "half_pixel"), ("nearest", False, "asymmetric")):
                ty, tx = taps(weights(H, 23, kernel, aa, centre, offset=0.3)), taps(weights(W, 31, kernel, aa, centre))
                for pil in (False, True):
                    got, want = apply_taps(img, ty, tx, pil), definition(img, ty, tx, pil)
                    assert got.dtype == np.float32 and got.shape == want.shape
                    np.testing.assert_array_equal(got, want, err_msg=f"{shape} {dtype} {kernel} aa={aa} pil={pil}")


def test_compiled_taps_reject_indices_outside_the_frame():
    """The C code checks every tap index and buffer size: a bad one is a ValueError, never a read past
    the frame."""
    from parity.preprocessing import resample

    if resample.native is None:
        pytest.fail("parity.preprocessing._taps did not build (pip install -e . compiles it with the C compiler)")
    frame, out = np.zeros((4, 5, 3), np.uint8), np.empty((2, 2, 3), np.float32)
    iy, wy = np.array([[0, 1], [2, 3]], np.int64), np.ones((2, 2), np.float32)
    ix = np.array([[0, 1], [3, 4]], np.int64)
    resample.native.apply_taps(frame, 4, 5, 3, False, iy, wy, ix, wy, 2, 2, False, out)
    with pytest.raises(ValueError, match="column tap index 5 outside 0..4"):
        resample.native.apply_taps(frame, 4, 5, 3, False, iy, wy, ix + 1, wy, 2, 2, False, out)
    with pytest.raises(ValueError, match="the frame's bytes"):
        resample.native.apply_taps(frame, 5, 5, 3, False, iy, wy, ix, wy, 2, 2, False, out)
    with pytest.raises(ValueError, match="out must be"):
        resample.native.apply_taps(frame, 4, 5, 3, False, iy, wy, ix, wy, 2, 2, False, out[:1].copy())
