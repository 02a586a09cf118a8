"""Separable image resampling with every convention that deployment code disagrees on.

A resize is two weight matrices (rows x source rows, columns x source columns), so one
implementation covers every kernel x antialias x pixel-centre choice; they are applied through
their non-zero taps only (two per output sample for bilinear): compiled (`_taps.c`, built at install),
or where it did not build, or for other dtypes, one vectorised numpy pass per tap (whole rows
gathered: the width pass on the frame transposed by OpenCV); the same float32 bits either way. Which library matches which setting (tests check each within 1 LSB):

| setting | matches |
|---|---|
| antialias=True,  half_pixel, bilinear/bicubic(a=-0.5)/lanczos3/box, pil_rounding=True | Pillow `Image.resize` |
| antialias=False, half_pixel, bilinear/bicubic(a=-0.75)/lanczos4/area | OpenCV `cv2.resize` INTER_LINEAR/CUBIC/LANCZOS4/AREA |
| antialias=False, half_pixel, nearest | OpenCV INTER_NEAREST_EXACT, Pillow NEAREST |
| antialias=False, asymmetric, nearest | OpenCV INTER_NEAREST |
| antialias=False, align_corners, bilinear/bicubic | torch `F.interpolate(align_corners=True)`, ONNX Resize `align_corners` |
| antialias=False, asymmetric, bilinear | ONNX Resize `asymmetric` (TensorFlow 1 `resize_bilinear`) |
| antialias=True,  half_pixel, bilinear/bicubic(a=-0.5) | torch `F.interpolate(antialias=True)` |
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

try:  # the compiled taps (parity/preprocessing/_taps.c), built at install where a C compiler is
    from . import _taps as native
except ImportError:
    native = None

KERNELS = ("nearest", "bilinear", "bicubic", "area", "box", "lanczos3", "lanczos4")
PIXEL_CENTRES = ("half_pixel", "align_corners", "asymmetric")
_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0, "box": 0.5, "lanczos3": 3.0, "lanczos4": 4.0}


def _kernel(name: str, x: np.ndarray, cubic_a: float) -> np.ndarray:
    ax = np.abs(x)
    if name == "bilinear":
        return np.clip(1.0 - ax, 0.0, None)
    if name == "box":
        return ((x > -0.5) & (x <= 0.5)).astype(np.float64)
    if name == "bicubic":
        a = cubic_a
        return np.where(
            ax <= 1, ((a + 2) * ax - (a + 3)) * ax * ax + 1,
            np.where(ax < 2, ((a * ax - 5 * a) * ax + 8 * a) * ax - 4 * a, 0.0),
        )
    if name in ("lanczos3", "lanczos4"):
        n = float(name[-1])
        return np.where(ax < n, np.sinc(x) * np.sinc(x / n), 0.0)
    raise ValueError(name)


def _source_coord(dst: np.ndarray, n_in: int, n_out: int, centre: str) -> np.ndarray:
    if centre == "half_pixel":
        return (dst + 0.5) * (n_in / n_out) - 0.5
    if centre == "align_corners":
        return dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(dst)
    if centre == "asymmetric":
        return dst * (n_in / n_out)
    raise ValueError(f"unknown pixel centre {centre!r}; expected one of {PIXEL_CENTRES}")


@lru_cache(maxsize=256)
def weights(n_in: int, n_out: int, kernel: str, antialias: bool, centre: str, cubic_a: float = -0.75, offset: float = 0.0) -> np.ndarray:
    """[n_out, n_in] float64 matrix; row i holds the weights of output sample i.

    `offset` shifts every sampling position by that many source pixels (a sub-pixel misalignment).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown resize kernel {kernel!r}; expected one of {KERNELS}")
    dst = np.arange(n_out, dtype=np.float64)
    W = np.zeros((n_out, n_in))
    scale = n_in / n_out
    if offset and kernel == "nearest":
        src = _source_coord(dst, n_in, n_out, centre) + offset
        W[np.arange(n_out), np.clip(np.floor(src + 0.5).astype(int), 0, n_in - 1)] = 1.0
        return W
    if kernel == "nearest":
        # Integer arithmetic: floating-point error would flip the source pixel exactly at ties.
        d = np.arange(n_out, dtype=np.int64)
        if centre == "half_pixel":
            idx = ((2 * d + 1) * n_in) // (2 * n_out)
        elif centre == "asymmetric":
            idx = (d * n_in) // n_out
        else:
            idx = np.round(_source_coord(dst, n_in, n_out, centre)).astype(np.int64)
        W[np.arange(n_out), np.clip(idx, 0, n_in - 1)] = 1.0
        return W
    if kernel == "area":
        if scale <= 1:
            # OpenCV's INTER_AREA when enlarging: nearest, blended linearly only across source-pixel edges.
            sx = np.floor(dst * scale)
            fx = (dst + 1) - (sx + 1) / scale
            fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
            W[np.arange(n_out), np.clip(sx.astype(int), 0, n_in - 1)] += 1 - fx
            np.add.at(W, (np.arange(n_out), np.clip(sx.astype(int) + 1, 0, n_in - 1)), fx)
            return W
        lo = dst * scale + offset
        hi = lo + scale
        edges = np.arange(n_in + 1, dtype=np.float64)
        W = np.clip(np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]), 0, None) / scale
        return W
    support = _SUPPORT[kernel]
    if antialias:
        # Pillow's algorithm: when shrinking the kernel is stretched by the scale; the window is
        # clipped to the image and the weights renormalised (no border replication).
        fscale = max(scale, 1.0)
        centre_in = ((dst + 0.5) * scale if centre == "half_pixel" else _source_coord(dst, n_in, n_out, centre) + 0.5) + offset
        sup = support * fscale
        for i, c in enumerate(centre_in):
            xmin = max(int(c - sup + 0.5), 0)
            xmax = min(int(c + sup + 0.5), n_in)
            x = np.arange(xmin, xmax, dtype=np.float64)
            w = _kernel(kernel, (x - c + 0.5) / fscale, cubic_a)
            s = w.sum()
            W[i, xmin:xmax] = w / s if s else 0.0
        return W
    # Fixed taps around the mapped coordinate, indices clamped at the border (replicate), as OpenCV
    # and torch do; the kernel is not stretched, so downscaling aliases.
    src = _source_coord(dst, n_in, n_out, centre) + offset
    taps = int(math.ceil(support)) if kernel != "box" else 1
    base = np.floor(src)
    for k in range(-taps + 1, taps + 1):
        idx = base + k
        w = _kernel(kernel, src - idx, cubic_a)
        np.add.at(W, (np.arange(n_out), np.clip(idx.astype(int), 0, n_in - 1)), w)
    if kernel in ("lanczos3", "lanczos4"):
        W /= W.sum(axis=1, keepdims=True)
    return W


@lru_cache(maxsize=64)
def window_weights(n_src: int, start: int, stop: int, n_out: int, **kw) -> tuple[np.ndarray, int, int]:
    """Weights that resample the window [start, stop) of a source of length n_src to n_out samples,
    repeating the edge where the window leaves the source. Returns (W, lo, hi): W applies to
    source[lo:hi], so a crop, its offset and the resize are one matrix and nothing is copied."""
    W = weights(stop - start, n_out, **kw)
    lo, hi = max(min(start, n_src - 1), 0), min(max(stop, 1), n_src)
    src = np.clip(np.arange(start, stop), lo, hi - 1) - lo
    out = np.zeros((n_out, hi - lo))
    np.add.at(out.T, src, W.T)
    return out, lo, hi


def taps(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero weights of each row of W [n_out, n_in]: (idx [n_out, K], w [n_out, K] float32),
    zero-padded to the longest row. A bilinear resize has K = 2; Pillow's antialiased one a few more."""
    nz = W != 0
    K = max(int(nz.sum(axis=1).max(initial=0)), 1)
    idx = np.zeros((W.shape[0], K), np.int64)
    w = np.zeros((W.shape[0], K), np.float32)
    for i in range(W.shape[0]):
        cols = np.flatnonzero(nz[i])
        idx[i, : len(cols)], w[i, : len(cols)] = cols, W[i, cols]
    return idx, w


@lru_cache(maxsize=64)
def window_taps(n_src: int, start: int, stop: int, n_out: int, **kw):
    """`window_weights` as taps: ((idx, w), lo, hi)."""
    W, lo, hi = window_weights(n_src, start, stop, n_out, **kw)
    return taps(W), lo, hi


def _pass(x: np.ndarray, t: tuple[np.ndarray, np.ndarray], axis: int) -> np.ndarray:
    """One separable pass along `axis`: out[.., i, ..] = sum_k w[i, k] * x[.., idx[i, k], ..], in k order
    (the definition `apply_taps` computes faster; kept for what OpenCV cannot transpose)."""
    idx, w = t
    shape = [1] * x.ndim
    shape[axis] = -1
    out = None
    for k in range(idx.shape[1]):
        term = np.take(x, idx[:, k], axis=axis).astype(np.float32)
        term *= w[:, k].reshape(shape)
        if out is None:
            out = term
        else:
            out += term
    return out


class _Frame:
    """The buffers of one frame's two passes, reused frame after frame. Each pass gathers whole rows:
    the width pass on the frame transposed by OpenCV (numpy's gather of single columns of a
    channels-last image was most of preprocessing), and the frame stays in cache between the passes."""

    def __init__(self, H: int, C: int, ty, tx, dtype):
        (self.iy, wy), (self.ix, wx) = ty, tx
        h, w = len(self.iy), len(self.ix)
        self.wx = [wx[:, k, None, None] for k in range(self.ix.shape[1])]
        self.wy = [wy[:, k, None, None] for k in range(self.iy.shape[1])]
        self.gx, self.cols, self.term = np.empty((w, H, C), dtype), np.empty((w, H, C), np.float32), np.empty((w, H, C), np.float32)
        self.gy, self.rows = np.empty((h, w, C), np.float32), np.empty((h, w, C), np.float32)

    def width(self, img: np.ndarray) -> np.ndarray:
        """[H, W, C] -> [H, w, C] float32 (OpenCV drops a channel axis of 1: the caller reshapes)."""
        import cv2

        xt = cv2.transpose(np.ascontiguousarray(img)).reshape(img.shape[1], img.shape[0], -1)  # [W, H, C]
        for k, wk in enumerate(self.wx):
            np.take(xt, self.ix[:, k], axis=0, out=self.gx)
            np.multiply(self.gx, wk, out=self.cols if k == 0 else self.term)  # x -> float32 exactly, then the product
            if k:
                self.cols += self.term
        return cv2.transpose(self.cols.reshape(len(self.ix), -1) if self.cols.shape[2] == 1 else self.cols)

    def height(self, x: np.ndarray, out: np.ndarray) -> None:
        """[H, w, C] float32 -> out [h, w, C]: the rows' taps, summed in k order."""
        for k, wk in enumerate(self.wy):
            np.take(x, self.iy[:, k], axis=0, out=self.gy)
            np.multiply(self.gy, wk, out=out if k == 0 else self.rows)
            if k:
                out += self.rows


def _to_8bit(x: np.ndarray) -> None:
    """Pillow's rounding to 8-bit levels between its two passes, in place (half up, clipped)."""
    np.floor(x + 0.5, out=x)
    np.clip(x, 0, 255, out=x)


_TRANSPOSABLE = (np.uint8, np.uint16, np.int16, np.float32, np.float64)  # what cv2.transpose takes, up to 4 channels


def apply_taps(img: np.ndarray, ty, tx, pil_rounding: bool = False) -> np.ndarray:
    """[..., H, W, C] -> [..., h, w, C] float32 through row taps ty and column taps tx: only the
    non-zero weights are touched (a dense product would cost more than the model here). Horizontal
    first, as Pillow; every output is sum_k w[k] * x[idx[k]] in k order, however it is gathered."""
    if img.ndim < 3 or not 1 <= img.shape[-1] <= 4 or img.dtype.type not in _TRANSPOSABLE:
        x = _pass(img, tx, img.ndim - 2)
        if pil_rounding:
            _to_8bit(x)
        return _pass(x, ty, img.ndim - 3)
    frames = img.reshape(-1, *img.shape[-3:])
    H, C = frames.shape[1], frames.shape[3]
    h, w = len(ty[0]), len(tx[0])
    if native is not None and frames.dtype.type in (np.uint8, np.float32):
        return _apply_taps_native(frames, ty, tx, pil_rounding).reshape(*img.shape[:-3], h, w, C)
    buf = _Frame(H, C, ty, tx, frames.dtype)
    out = np.empty((len(frames), h, w, C), np.float32)
    for n, frame in enumerate(frames):
        x = buf.width(frame).reshape(H, w, C)
        if pil_rounding:
            _to_8bit(x)
        buf.height(x, out[n])
    return out.reshape(*img.shape[:-3], h, w, C)


def _apply_taps_native(frames: np.ndarray, ty, tx, pil_rounding: bool) -> np.ndarray:
    """`apply_taps` of uint8 or float32 frames [N, H, W, C], compiled (the same float32 operations in
    the same order: the same bits)."""
    N, H, W, C = frames.shape
    (iy, wy), (ix, wx) = (tuple(np.ascontiguousarray(a, t) for a, t in zip(p, (np.int64, np.float32))) for p in (ty, tx))
    out = np.empty((N, len(iy), len(ix), C), np.float32)
    for n in range(N):  # frame by frame: a crop of a batch is contiguous within each frame, not across them
        native.apply_taps(np.ascontiguousarray(frames[n]), H, W, C, frames.dtype == np.float32, iy, wy, ix, wx,
                          len(iy), len(ix), pil_rounding, out[n])
    return out


def apply_weights(img: np.ndarray, Wy: np.ndarray, Wx: np.ndarray, pil_rounding: bool = False) -> np.ndarray:
    """[..., H, W, C] -> [..., h, w, C] float32 through row weights Wy [h, H] and column weights Wx [w, W]."""
    return apply_taps(img, taps(Wy), taps(Wx), pil_rounding)


def resize(
    img: np.ndarray,
    size: tuple[int, int],
    kernel: str = "bilinear",
    antialias: bool = False,
    centre: str = "half_pixel",
    cubic_a: float = -0.75,
    pil_rounding: bool = False,
    offset: float = 0.0,
) -> np.ndarray:
    """Resize channels-last [..., H, W, C] to size=(h, w). uint8 in -> uint8 out (rounded, clipped).

    `pil_rounding` rounds to 8-bit values between the horizontal and the vertical pass, as Pillow does.
    """
    if img.ndim < 3:
        raise ValueError(f"resize expects [..., H, W, C], got shape {img.shape}")
    h, w = size
    H, W = img.shape[-3], img.shape[-2]
    Wy = weights(H, h, kernel, antialias, centre, cubic_a, offset)
    Wx = weights(W, w, kernel, antialias, centre, cubic_a, offset)
    x = apply_weights(img, Wy, Wx, pil_rounding)
    if img.dtype == np.uint8:
        # Half up, as the fixed-point code in Pillow and OpenCV rounds.
        return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)
    return x.astype(img.dtype, copy=False)
