"""A capture as a runner: outputs an engine computed on the user's target, answered by input content.

Each batch fed is hashed row by row (sha256 of the frame's float32 bytes, as inputs.json records
them); every row must be a frame the capture has, else the batch is refused (CaptureMismatch, exit
2) and the replay names the case and frame. Batching need not match the export's: rows are looked
up one by one. Inference time is the GPU time the capture script recorded per batch (NaN for
formats that record none), never the lookup's.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParityError
from .base import Runner, TensorSpec
from .captures import Capture
from .captures.manifest import row_hashes


class CaptureMismatch(ParityError):
    """A batch holds a frame whose input the capture was not made from."""

    def __init__(self, capture: str, rows: list[int], hashes: list[str]):
        self.capture, self.rows, self.hashes = capture, rows, hashes
        super().__init__(f"capture {capture!r} was made from other inputs: batch row {rows[0]} (input sha256 {hashes[0][:12]}) "
                         "is not in it")


class CaptureRunner(Runner):
    def __init__(self, capture: Capture):
        super().__init__(capture.name)
        self.capture = capture
        self.label = capture.label()
        m = capture.manifest
        first = m.batches[0].tensor
        self.input_name, self.output_name = m.input_name, m.output_name
        self._spec = {self.input_name: TensorSpec((None, *first["shape"][1:]), first["dtype"])}
        self.rows: dict[str, tuple[str, int]] = {}
        self._gpu_ms = float("nan")

    def covers(self, pipeline_sha256: str, perturbation: str = "none", severity: int = 0) -> bool:
        """Whether the capture has frames of this pipeline spec under this perturbation (a run feeds it only those)."""
        return any(b.id in self.capture.outputs and b.kind == "frames" and b.pipeline_sha256 == pipeline_sha256
                   and b.perturbation == perturbation and (perturbation == "none" or b.severity == severity)
                   for b in self.capture.manifest.batches)

    def activate_impl(self) -> None:
        self.rows = self.capture.frame_rows()

    def io_spec_impl(self) -> dict[str, TensorSpec]:
        return self._spec

    def infer_impl(self, feed):
        hashes = row_hashes(feed[self.input_name])
        missing = [k for k, h in enumerate(hashes) if h not in self.rows]
        if missing:
            raise CaptureMismatch(self.name, missing, [hashes[k] for k in missing])
        where = [self.rows[h] for h in hashes]
        out = {name: np.stack([self.capture.outputs[b][name][k] for b, k in where]).astype(np.float32, copy=False)
               for name in self.capture.outputs[where[0][0]]}
        ms = self.capture.gpu_ms
        batches = {b for b, _ in where}
        sizes = {b.id: b.size for b in self.capture.manifest.batches}
        # GPU time of the export's batches this one draws on, in proportion to the rows taken from each
        self._gpu_ms = sum(ms.get(b, float("nan")) * sum(1 for x, _ in where if x == b) / sizes[b] for b in batches)
        return out

    def reported_time(self, elapsed: float) -> float:
        return self._gpu_ms / 1e3

    def invariance(self) -> list[tuple]:
        """(manifest batch, its outputs) of every captured batch-invariance probe."""
        return [(b, self.capture.outputs[b.id]) for b in self.capture.manifest.batches
                if b.kind == "invariance" and b.id in self.capture.outputs]

    def describe_impl(self) -> dict:
        c = self.capture
        claim, by = c.precision
        return {"backend": "capture", "format": c.format, "capture": str(c.path), "inputs_manifest": str(c.manifest.path),
                "precision_claimed": claim, "precision_claimed_by": by, "lossy": c.lossy, **c.provenance}
