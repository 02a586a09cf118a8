"""One prepared batch through every runner: the same tensor to each, outputs checked, timed and decoded,
and each runner's raw output compared with the first runner's (the reference) on that same input.

Replay, sweep and localize all feed runners through `RunnerBatches`, so the comparison means the
same everywhere. A frame whose output has any NaN/Inf is a finding, not a crash: its share of
non-finite values is recorded and its lanes are failed (no lane decoded), so accuracy counts them as
missed and the other runners' results stand.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics.tensors import output_parity
from ..models.outputs import decode_outputs, output_names
from ..runners.base import RunnerError

RAW_PARITY = ("raw_max", "raw_p99", "raw_mean", "raw_cosine", "argmax_flip_rate")


def raw_parity(logits: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame raw output parity of a batch against the reference runner's logits, and the share of
    the batch's own values that are NaN/Inf (`nonfinite`)."""
    p = output_parity(logits, ref)
    return {"raw_max": p["max"], "raw_p99": p["p99"], "raw_mean": p["mean"], "raw_cosine": p["cosine"],
            "argmax_flip_rate": p["flips"], "nonfinite": p["nonfinite"]}


def worst_over_outputs(per: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per frame, over every named output's parity: the worst of each figure (largest differences and
    flip rate, smallest cosine), so no output's divergence is averaged away by another's agreement."""
    per = list(per.values())
    if len(per) == 1:
        return {k: per[0][k] for k in RAW_PARITY}
    worst = {k: np.max(np.stack([p[k] for p in per]), axis=0) for k in RAW_PARITY if k != "raw_cosine"}
    worst["raw_cosine"] = np.min(np.stack([p["raw_cosine"] for p in per]), axis=0)
    return worst


@dataclass
class RunnerOutputs:
    """One runner's results over every frame fed so far, in feeding order."""

    x: np.ndarray  # decoded lanes [T, L, R], source pixels, NaN = absent
    ms: np.ndarray  # inference time per frame (batch time / batch size)
    raw: dict[str, np.ndarray]  # RAW_PARITY name -> [T], against the reference runner: the worst over outputs
    raw_by_output: dict[str, dict[str, np.ndarray]]  # output name -> RAW_PARITY name and "nonfinite" -> [T]
    nonfinite: np.ndarray  # share of the frame's output values that are NaN/Inf (> 0: the frame's lanes are failed)
    logits: np.ndarray | None  # kept only for the runners asked for

    @classmethod
    def concat(cls, parts: list["RunnerOutputs"]) -> "RunnerOutputs":
        """One feeding order after another."""
        if len(parts) == 1:
            return parts[0]
        cat = np.concatenate
        return cls(
            x=cat([p.x for p in parts]), ms=cat([p.ms for p in parts]), raw={k: cat([p.raw[k] for p in parts]) for k in parts[0].raw},
            raw_by_output={k: {m: cat([p.raw_by_output[k][m] for p in parts]) for m in d} for k, d in parts[0].raw_by_output.items()},
            nonfinite=cat([p.nonfinite for p in parts]),
            logits=None if any(p.logits is None for p in parts) else cat([p.logits for p in parts]),
        )

    def rows(self, pos: np.ndarray) -> "RunnerOutputs":
        """The results of the frames at positions `pos` of this feeding order (repeats allowed)."""
        return RunnerOutputs(
            x=self.x[pos], ms=self.ms[pos], raw={k: v[pos] for k, v in self.raw.items()},
            raw_by_output={k: {m: v[pos] for m, v in d.items()} for k, d in self.raw_by_output.items()},
            nonfinite=self.nonfinite[pos], logits=None if self.logits is None else self.logits[pos],
        )


class RunnerBatches:
    """Feeds batches to `runners` (the first is the reference) and collects what each returns."""

    def __init__(self, runners, adapter, image_width: int, keep_logits=()):
        self.runners, self.adapter, self.width = list(runners), adapter, image_width
        self.keep_logits = set(keep_logits)
        self._parts: dict[str, dict[str, list]] = {r.name: {"x": [], "ms": [], "raw": [], "nonfinite": [], "logits": []} for r in self.runners}

    def feed(self, batch: np.ndarray) -> None:
        """Every runner on the batch first, then each one's outputs checked, compared and decoded: the
        runners run back to back, as they would alone, with nothing of parity's between them."""
        feed = {self.adapter.input_name: batch}
        names = output_names(self.adapter)
        ran, ref = [], None
        for r in self.runners:
            out = r.infer(feed)
            missing = [k for k in names if k not in out]
            if missing:
                raise RunnerError(f"runner {r.name} returned {sorted(out)}, not {', '.join(map(repr, missing))}")
            outs = {k: out[k] for k in names}
            if ref is not None and any(outs[k].shape != ref[k].shape for k in names):
                k = next(k for k in names if outs[k].shape != ref[k].shape)
                raise RunnerError(f"runner {r.name} returned {k} of shape {outs[k].shape}, the reference {ref[k].shape}")
            ref = outs if ref is None else ref
            ran.append((r.name, outs, r.last_inference_time))
        for name, outs, seconds in ran:
            self._record(self._parts[name], outs, ref, seconds, len(batch), name in self.keep_logits)

    def _record(self, p: dict, outs: dict, ref: dict, seconds: float, n: int, keep_logits: bool) -> None:
        names = list(outs)
        per = {k: raw_parity(outs[k], ref[k]) for k in names}
        p["raw"].append(per)
        sizes = {k: outs[k].size // n for k in names}  # the frame's share over all its values: each output's, weighted by size
        nonfinite = sum(per[k]["nonfinite"] * sizes[k] for k in names) / sum(sizes.values())
        p["nonfinite"].append(nonfinite)
        with np.errstate(invalid="ignore", over="ignore"):
            x = decode_outputs(self.adapter, outs, self.width)
        x[nonfinite > 0] = np.nan  # a decoder fed NaN/Inf may still return numbers: those lanes are failed
        p["x"].append(x)
        p["ms"].append(np.full(n, seconds * 1e3 / n))
        if keep_logits:
            p["logits"].append(outs[names[0]])

    def outputs(self) -> dict[str, RunnerOutputs]:
        out = {}
        for name, p in self._parts.items():
            if not p["x"]:
                continue
            by_output = {k: {m: np.concatenate([b[k][m] for b in p["raw"]]) for m in p["raw"][0][k]} for k in p["raw"][0]}
            out[name] = RunnerOutputs(
                x=np.concatenate(p["x"]), ms=np.concatenate(p["ms"]),
                raw=worst_over_outputs(by_output), raw_by_output=by_output,
                nonfinite=np.concatenate(p["nonfinite"]),
                logits=np.concatenate(p["logits"]) if p["logits"] else None,
            )
        return out


def nonfinite_findings(results: list[dict]) -> list[str]:
    """What fails a run although every case ran: a runner whose outputs went NaN/Inf."""
    out = []
    for r in results:
        n = r.get("nonfinite_frames", 0)
        if n:
            where = ", ".join(f"{k} {r[k]}" for k in ("pipeline", "perturbation", "severity") if k in r)
            out.append(f"runner {r['runner']} ({where}) produced NaN/Inf outputs on {n} of {r['frames']} frames "
                       f"(rate {r['nonfinite_rate']:.4f}); their lanes count as failed")
    return out
