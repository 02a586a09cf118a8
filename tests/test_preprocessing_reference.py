"""Every conversion and resize op against the library whose convention it reproduces (within 1 LSB)."""
import numpy as np
import pytest

from parity.colour import nv12_to_rgb, rgb_to_nv12
from parity.preprocessing.resample import resize
from parity.cases.synth import Scenario, render

cv2 = pytest.importorskip("cv2")
from PIL import Image  # noqa: E402

SCENE = render(Scenario("ref", seed=3, curvature=((0.0, 1 / 300),), shadows=True), 5)[0]
NOISE = np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)
# Sizes without exact half-way ties for nearest (libraries break exact ties by floating-point luck).
SIZES = [(112, 288), (45, 61), (200, 301), (150, 250)]


def _half_pixel_tie(src_hw, dst_hw) -> bool:
    """Does some output centre land exactly on a source pixel edge (nearest is then a coin toss)?"""
    return any((((2 * np.arange(o) + 1) * i) % (2 * o) == 0).any() for i, o in zip(src_hw, dst_hw))


def maxdiff(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("src", [SCENE, NOISE], ids=["scene", "noise"])
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize(
    "kernel, pil_filter, cubic_a",
    [("bilinear", Image.BILINEAR, -0.75), ("bicubic", Image.BICUBIC, -0.5), ("lanczos3", Image.LANCZOS, -0.75), ("box", Image.BOX, -0.75)],
)
def test_antialiased_resize_matches_pillow(src, size, kernel, pil_filter, cubic_a):
    want = np.asarray(Image.fromarray(src).resize(size[::-1], pil_filter))
    got = resize(src, size, kernel, antialias=True, centre="half_pixel", cubic_a=cubic_a, pil_rounding=True)
    assert maxdiff(got, want) <= 1


@pytest.mark.parametrize("src", [SCENE, NOISE], ids=["scene", "noise"])
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize(
    "kernel, flag, centre",
    [("bilinear", cv2.INTER_LINEAR, "half_pixel"), ("bicubic", cv2.INTER_CUBIC, "half_pixel"),
     ("lanczos4", cv2.INTER_LANCZOS4, "half_pixel"), ("area", cv2.INTER_AREA, "half_pixel"),
     ("nearest", cv2.INTER_NEAREST_EXACT, "half_pixel")],
)
def test_plain_resize_matches_opencv(src, size, kernel, flag, centre):
    if kernel == "nearest" and _half_pixel_tie(src.shape[:2], size):
        pytest.skip("exact tie: OpenCV's floating-point index picks either neighbour")
    want = cv2.resize(src, size[::-1], interpolation=flag)
    assert maxdiff(resize(src, size, kernel, antialias=False, centre=centre), want) <= 1


def test_asymmetric_nearest_matches_opencv():
    src = np.arange(640 * 3, dtype=np.uint16).reshape(1, 640, 3).repeat(4, 0) % 251
    src = src.astype(np.uint8)
    for w in (288, 301, 97):
        want = cv2.resize(src, (w, 4), interpolation=cv2.INTER_NEAREST)
        assert maxdiff(resize(src, (4, w), "nearest", centre="asymmetric"), want) == 0


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_align_corners_and_antialias_match_torch(size, mode):
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(SCENE).permute(2, 0, 1)[None].float()
    ref = lambda **k: F.interpolate(t, size=size, mode=mode, **k)[0].permute(1, 2, 0).numpy()  # noqa: E731
    q = lambda x: np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)  # noqa: E731
    assert maxdiff(resize(SCENE, size, mode, centre="align_corners"), q(ref(align_corners=True))) <= 1
    a = -0.5 if mode == "bicubic" else -0.75  # torch's antialiased bicubic uses Pillow's a
    got = resize(SCENE, size, mode, antialias=True, centre="half_pixel", cubic_a=a)
    assert maxdiff(got, q(ref(align_corners=False, antialias=True))) <= 1


@pytest.mark.parametrize("mode", ["half_pixel", "asymmetric", "align_corners"])
def test_bilinear_matches_onnx_resize(mode):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    size = (45, 61)
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", coordinate_transformation_mode=mode)
    graph = helper.make_graph(
        [node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 360, 640])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 3, *size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what the installed onnxruntime reads
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": SCENE.transpose(2, 0, 1)[None].astype(np.float32)})[0][0].transpose(1, 2, 0)
    want = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
    assert maxdiff(resize(SCENE, size, "bilinear", centre=mode), want) <= 1


def test_nv12_bt601_limited_matches_opencv():
    nv12 = rgb_to_nv12(SCENE, "bt601", "limited")
    want = cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12)
    assert maxdiff(nv12_to_rgb(nv12, "bt601", "limited", "nearest"), want) <= 1


def test_full_range_bt601_matches_opencv_ycrcb():
    ycrcb = cv2.cvtColor(SCENE, cv2.COLOR_RGB2YCrCb)  # BT.601, full range, 4:4:4
    assert maxdiff(rgb_to_nv12(SCENE, "bt601", "full")[:360], ycrcb[..., 0]) <= 1
    # Decode our full-range NV12 and OpenCV's 4:4:4 YCrCb of the same chroma: same RGB within 1 LSB.
    nv12 = rgb_to_nv12(SCENE, "bt601", "full")
    uv = nv12[360:].reshape(180, 320, 2).repeat(2, 0).repeat(2, 1)
    ycc = np.dstack([nv12[:360], uv[..., 1], uv[..., 0]])
    assert maxdiff(nv12_to_rgb(nv12, "bt601", "full"), cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)) <= 1


@pytest.mark.parametrize("rng_, coeffs", [
    # ITU-R BT.709 limited range, the published 8-bit equations
    ("limited", (1.164383, 1.792741, -0.213249, -0.532909, 2.112402)),
    ("full", (1.0, 1.5748, -0.187324, -0.468124, 1.8556)),
])
def test_bt709_matches_published_coefficients(rng_, coeffs):
    ky, kvr, kug, kvg, kub = coeffs
    off = 16 if rng_ == "limited" else 0
    nv12 = rgb_to_nv12(SCENE, "bt709", rng_)
    y = nv12[:360].astype(float) - off
    uv = nv12[360:].reshape(180, 320, 2).repeat(2, 0).repeat(2, 1).astype(float) - 128
    u, v = uv[..., 0], uv[..., 1]
    scale_c = 255 / 224 if rng_ == "limited" else 1.0
    ref = np.dstack([ky * y + kvr * v * (scale_c / (255 / 224) if rng_ == "limited" else 1),
                     ky * y + kug * u + kvg * v, ky * y + kub * u])
    ref = np.clip(np.floor(ref + 0.5), 0, 255).astype(np.uint8)
    assert maxdiff(nv12_to_rgb(nv12, "bt709", rng_), ref) <= 1
