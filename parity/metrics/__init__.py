"""Metrics: the formulas that turn lanes into numbers, which reference each one uses, and scoring
of predictions from outside parity.

Lanes are arrays x[frame, lane, row] in source-image pixels at fixed anchor rows, NaN where a lane
is absent. The formulas (one module per idea: `tusimple`, `culane`, `bending`, `jitter`, `lateral`,
`tensors`) are plain vectorised numpy, usable on predictions from any source; `scoring` applies
them to a run's lanes (which reference, which frames) and aggregates them; `external` scores
TuSimple-format predictions (`parity score`). Definitions: docs/metrics.md.

This package may import the shared top-level modules, `parity.cases` (lane rows, the camera) and
`parity.runners` (the reference runner's name); never the runs, training or decisions built on it.
"""
from ..cases.lanes import resample_rows
from .bending import KINK_PX, KINK_PX_AT_1280, bending, chord_deviation, kink_rate, kink_threshold
from .culane import CULANE_IMAGE_SIZE, CULANE_IMAGE_WIDTH, CULANE_WIDTH_PX, culane_counts, culane_counts_at, f1, lane_masks_iou
from .jitter import LOOKAHEAD, OSC_THRESHOLD_PX, jitter, lookahead_rows
from .lateral import lateral_difference, metres_per_pixel
from .tensors import argmax_flips, tensor_parity
from .tusimple import TUSIMPLE_PIXEL_THRESH, TUSIMPLE_POINT_THRESH, TUSIMPLE_WIDTH, tusimple, tusimple_batch, tusimple_frame

__all__ = [
    "resample_rows", "KINK_PX", "KINK_PX_AT_1280", "bending", "chord_deviation", "kink_rate", "kink_threshold",
    "CULANE_IMAGE_SIZE", "CULANE_IMAGE_WIDTH", "CULANE_WIDTH_PX", "culane_counts", "culane_counts_at", "f1", "lane_masks_iou",
    "LOOKAHEAD", "OSC_THRESHOLD_PX", "jitter", "lookahead_rows", "lateral_difference", "metres_per_pixel",
    "argmax_flips", "tensor_parity", "TUSIMPLE_PIXEL_THRESH", "TUSIMPLE_POINT_THRESH", "TUSIMPLE_WIDTH",
    "tusimple", "tusimple_batch", "tusimple_frame",
]
