"""YUV <-> RGB conversion as camera ISPs and vehicle decoders do it (BT.601/BT.709, full/limited range).

Every conversion is a 3x3 matrix plus offsets derived from the standard's Kr/Kb, so the same code
serves the synthetic ISP (encode) and the pipelines (decode), and a mismatch between them is a
choice of parameters, not a second implementation.
"""
from __future__ import annotations

import numpy as np

from .errors import UsageError

try:  # NV12 with nearest chroma compiled (parity/_colour.c), built at install where a C compiler is
    from . import _colour as native
except ImportError:
    native = None

# Luma coefficients (ITU-R BT.601 and BT.709).
KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
RANGES = ("limited", "full")


def _check(matrix, yuv_range) -> None:
    """A matrix is a standard's name or its (Kr, Kb); a range is a name or (luma offset, luma span, chroma span)."""
    if not (matrix in KR_KB or (isinstance(matrix, (tuple, list)) and len(matrix) == 2)):
        raise UsageError(f"unknown YUV matrix {matrix!r}; expected one of {sorted(KR_KB)} or (Kr, Kb)")
    if not (yuv_range in RANGES or (isinstance(yuv_range, (tuple, list)) and len(yuv_range) == 3)):
        raise UsageError(f"unknown YUV range {yuv_range!r}; expected one of {list(RANGES)} or (offset, luma span, chroma span)")


def rgb_to_yuv_matrix(matrix) -> np.ndarray:
    """Rows give (Y, Cb, Cr) in [0,1] / [-0.5,0.5] from RGB in [0,1]."""
    kr, kb = KR_KB[matrix] if isinstance(matrix, str) else matrix
    kg = 1.0 - kr - kb
    return np.array(
        [
            [kr, kg, kb],
            [-0.5 * kr / (1 - kb), -0.5 * kg / (1 - kb), 0.5],
            [0.5, -0.5 * kg / (1 - kr), -0.5 * kb / (1 - kr)],
        ],
        dtype=np.float64,
    )


def range_scale(yuv_range) -> tuple[float, float, float]:
    """(luma offset, luma span, chroma span) in 8-bit code values."""
    if not isinstance(yuv_range, str):
        return tuple(float(v) for v in yuv_range)
    return (16.0, 219.0, 224.0) if yuv_range == "limited" else (0.0, 255.0, 255.0)


def rgb_to_nv12(rgb: np.ndarray, matrix="bt601", yuv_range="limited") -> np.ndarray:
    """uint8 HxWx3 RGB -> NV12 bytes laid out as a (H*3/2)xW uint8 array (Y plane, then interleaved UV).

    Chroma is subsampled 2x2 by averaging, as ISPs do before emitting 4:2:0.
    """
    _check(matrix, yuv_range)
    h, w, _ = rgb.shape
    if h % 2 or w % 2:
        raise UsageError(f"NV12 needs even width and height, got {w}x{h}")
    off, ys, cs = range_scale(yuv_range)
    yuv = (rgb.astype(np.float64) / 255.0) @ rgb_to_yuv_matrix(matrix).T
    y = np.clip(np.rint(off + ys * yuv[..., 0]), 0, 255).astype(np.uint8)
    c = yuv[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    uv = np.clip(np.rint(128.0 + cs * c), 0, 255).astype(np.uint8)
    return np.concatenate([y, uv.reshape(h // 2, w)], axis=0)


def nv12_to_rgb(nv12: np.ndarray, matrix="bt601", yuv_range="limited", chroma: str = "nearest", rows=None) -> np.ndarray:
    """NV12 (H*3/2)xW uint8 -> uint8 HxWx3 RGB, rounding to nearest.

    `chroma` is how the 4:2:0 chroma is brought back to full resolution: "nearest" replicates
    each sample over its 2x2 block (what most embedded decoders do), "bilinear" interpolates
    with centred (MPEG-2) siting. `rows=(r0, r1)` converts only those rows (what a crop keeps):
    the same values as converting the whole frame and slicing it.
    """
    _check(matrix, yuv_range)
    h = nv12.shape[0] * 2 // 3
    w = nv12.shape[1]
    r0, r1 = (0, h) if rows is None else (max(int(rows[0]), 0), min(int(rows[1]), h))
    off, ys, cs = range_scale(yuv_range)
    inv = _inverse(matrix)
    if chroma == "bilinear":
        import torch
        import torch.nn.functional as F

        y = (nv12[r0:r1].astype(np.float32) - off) / ys
        uv = (nv12[h:].reshape(h // 2, w // 2, 2).astype(np.float32) - 128.0) / cs
        t = torch.from_numpy(np.ascontiguousarray(uv.transpose(2, 0, 1)))[None]
        uv = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].numpy().transpose(1, 2, 0)[r0:r1]
        rgb = np.stack([y * inv[k, 0] + (uv[..., 0] * inv[k, 1] + uv[..., 1] * inv[k, 2]) for k in range(3)], axis=-1)
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    if chroma != "nearest":
        raise UsageError(f"unknown chroma upsampling {chroma!r}; expected 'nearest' or 'bilinear'")
    if native is not None:
        return _nv12_nearest_native(nv12, h, w, r0, r1, off, ys, cs, inv)
    # Nearest chroma: each chroma sample covers a 2x2 block. Work plane by plane on rows of full
    # width (numpy is slow on tiny inner axes): luma scaled once to 0..255, each channel's chroma
    # term made at half resolution and repeated along the row, the two luma rows of a block share it.
    c0, c1 = r0 // 2, (r1 + 1) // 2
    n = c1 - c0
    y = nv12[2 * c0 : 2 * c1].astype(np.float32)
    y *= np.float32(255.0 / ys)
    y -= np.float32(off * 255.0 / ys)
    y = y.reshape(n, 2, w)
    uv = nv12[h + c0 : h + c1].reshape(n, w // 2, 2).astype(np.float32)
    uv -= np.float32(128.0)
    uv *= np.float32(255.0 / cs)
    planes = np.empty((3, n, 2, w), np.uint8)
    t = np.empty((n, 2, w), np.float32)
    for k in range(3):
        chroma = np.repeat(uv[..., 0] * inv[k, 1] + uv[..., 1] * inv[k, 2], 2, axis=1)
        if inv[k, 0] == 1.0:
            np.add(y, chroma[:, None, :], out=t)
        else:
            np.multiply(y, inv[k, 0], out=t)
            t += chroma[:, None, :]
        np.rint(t, out=t)
        np.clip(t, 0, 255, out=t)
        planes[k] = t
    import cv2

    sl = slice(r0 - 2 * c0, r1 - 2 * c0)
    return cv2.merge([np.ascontiguousarray(planes[k].reshape(2 * n, w)[sl]) for k in range(3)])  # interleaving: 30x numpy's transpose


def _nv12_nearest_native(nv12, h: int, w: int, r0: int, r1: int, off, ys, cs, inv) -> np.ndarray:
    """The nearest-chroma path below, compiled (parity/_colour.c: the same float32 operations, the same bits)."""
    out = np.empty((max(r1 - r0, 0), w, 3), np.uint8)
    native.nv12_nearest(np.ascontiguousarray(nv12, np.uint8), h, w, r0, max(r1, r0), float(np.float32(255.0 / ys)),
                        float(np.float32(off * 255.0 / ys)), float(np.float32(255.0 / cs)), np.ascontiguousarray(inv, np.float32), out)
    return out


def yuv422_to_rgb(packed: np.ndarray, layout: str, matrix="bt601", yuv_range="limited") -> np.ndarray:
    """Packed 4:2:2 YUV, H x 2W uint8 (`uyvy`: U Y0 V Y1 per pixel pair; `yuyv`: Y0 U Y1 V), -> uint8
    HxWx3 RGB, each chroma pair shared by its two pixels (what OpenCV's COLOR_YUV2RGB_UYVY does)."""
    _check(matrix, yuv_range)
    if layout not in ("uyvy", "yuyv"):
        raise UsageError(f"unknown 4:2:2 layout {layout!r}; expected 'uyvy' or 'yuyv'")
    q = packed.reshape(packed.shape[0], -1, 4).astype(np.float32)
    y = q[..., [1, 3]] if layout == "uyvy" else q[..., [0, 2]]
    u, v = (q[..., 0], q[..., 2]) if layout == "uyvy" else (q[..., 1], q[..., 3])
    off, ys, cs = range_scale(yuv_range)
    inv = _inverse(matrix)
    y = (y - off) * np.float32(255.0 / ys)
    u, v = (u - 128.0) * np.float32(255.0 / cs), (v - 128.0) * np.float32(255.0 / cs)
    rgb = np.stack([y * inv[k, 0] + (u * inv[k, 1] + v * inv[k, 2])[..., None] for k in range(3)], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(packed.shape[0], -1, 3)


def _inverse(matrix) -> np.ndarray:
    key = matrix if isinstance(matrix, str) else tuple(float(v) for v in matrix)
    if key not in _INVERSES:
        _INVERSES[key] = np.linalg.inv(rgb_to_yuv_matrix(matrix)).astype(np.float32)
    return _INVERSES[key]


_INVERSES: dict = {}
