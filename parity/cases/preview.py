"""Contact sheet: one frame per case with its GT lanes drawn, for a person to look at."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .. import atomic
from ..colour import nv12_to_rgb
from .format import Case

LANE_COLOURS = [(255, 64, 255), (0, 255, 255), (255, 200, 0), (80, 255, 80), (255, 90, 90), (120, 140, 255)]


def frame_rgb(case: Case, index: int) -> np.ndarray:
    """The frame as a person would see it: an RGB stream if there is one, else NV12 decoded per the case's ISP."""
    for s in ("jpeg", "png"):
        if s in case.streams:
            return case.read(index, s)
    isp = case.isp
    return nv12_to_rgb(case.read(index, "nv12"), isp.get("yuv_matrix", "bt601"), isp.get("yuv_range", "limited"))


def draw_lanes(rgb: np.ndarray, lanes_x: np.ndarray, rows: np.ndarray, width: int = 3):
    """A PIL image of `rgb` with polylines through x[lane, row] (NaN gaps break the line)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    for lane, xs in enumerate(lanes_x):
        colour = LANE_COLOURS[lane % len(LANE_COLOURS)]
        pts = [(float(x), float(r)) for x, r in zip(xs, rows) if np.isfinite(x)]
        if len(pts) >= 2:
            d.line(pts, fill=colour, width=width)
        for x, r in pts:
            d.ellipse([x - width, r - width, x + width, r + width], outline=colour)
    return im


def contact_sheet(cases: list[Case], out: str | Path, frame: int | None = None, columns: int = 3, tile_width: int = 480) -> Path:
    from PIL import Image, ImageDraw

    tiles = []
    for case in cases:
        idx = frame if frame is not None else len(case) // 2
        idx = min(max(idx, 0), len(case) - 1)
        if case.labelled is not None and not case.labelled[idx] and case.labelled.any():
            idx = int(np.flatnonzero(case.labelled)[0])
        rgb = frame_rgb(case, idx)
        im = draw_lanes(rgb, case.gt[idx], case.anchor_rows) if case.gt is not None else Image.fromarray(rgb)
        im = im.resize((tile_width, round(tile_width * im.height / im.width)))
        d = ImageDraw.Draw(im)
        label = f"{case.name}  frame {idx}  t={case.timestamps[idx]:.2f}s  " + ",".join(case.meta.get("tags", []))
        d.rectangle([0, 0, tile_width, 16], fill=(0, 0, 0))
        d.text((4, 2), label, fill=(255, 255, 255))
        tiles.append(im)
    rows = -(-len(tiles) // columns)
    h = max(t.height for t in tiles)
    sheet = Image.new("RGB", (columns * tile_width, rows * h), (30, 30, 30))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * tile_width, (i // columns) * h))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic.write_bytes(out, buf.getvalue())
    return Path(out)
