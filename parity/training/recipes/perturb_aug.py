"""`perturb-aug`: training with parity's own deployment mismatches as augmentation: the fix that
follows from what replay and sweep find. Each training frame also gets one perturbed copy, made
once before training by the **vehicle** pipeline (NV12, the deployed preprocessing) with a
deployment perturbation drawn per frame (crop offsets, resize kernel, pixel centre, YUV
matrix/range, normalisation, uint8 rounding, channel order) at severity 1..`max_severity`, seeded;
each batch sample is replaced by its perturbed copy with probability `p` (mirrored with it). The
labels are not moved: crop offsets stay small (2-4 source px at severities 1-2), so the model learns
to tolerate a slightly misplaced ROI rather than to follow it."""
from __future__ import annotations

import numpy as np

from ..loop import Hooks
from . import Recipe, register

DEPLOYMENT = ("crop_shift_x", "crop_shift_y", "resize_kernel", "pixel_centre", "yuv_matrix", "yuv_range", "norm_mismatch",
              "uint8_rounding", "channel_swap")


def perturbed_copies(cases, adapter, names, max_severity: int, seed: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """One perturbed vehicle-pipeline input per labelled frame, in load_training_set's order, and what was applied."""
    from ...preprocessing import perturb

    pipe = adapter.pipelines()["vehicle"]
    rng = np.random.default_rng(seed)
    out, applied_log = [], []
    for case in cases:
        if case.gt is None:
            continue
        labelled = np.flatnonzero(case.labelled)
        choice = rng.integers(0, len(names), len(labelled))
        sev = rng.integers(1, max_severity + 1, len(labelled))
        xs = np.empty((len(labelled), *adapter.input_shape()), np.float32)
        for k in np.unique(choice):
            for s in np.unique(sev[choice == k]):
                sel = np.flatnonzero((choice == k) & (sev == s))
                a = perturb.Applied(perturb.get(names[k]), int(s), seed, case.name)
                xs[sel] = a.pipeline(pipe).prepare(case, labelled[sel], hooks=a.hooks())
        out.append(xs)
        applied_log += [(names[c], int(v)) for c, v in zip(choice, sev)]
    return np.concatenate(out), applied_log


def build(hp):
    names = [n for n in hp["perturbations"].split(",") if n]

    def setup(ctx):
        import torch

        from ...cases.format import load_case

        cases = [load_case(p) for p in ctx.scratch["train_args"]["train_cases"]]
        x, log = perturbed_copies(cases, ctx.adapter, names, hp["max_severity"], ctx.scratch["train_args"]["seed"])
        if len(x) != len(ctx.X):
            raise RuntimeError(f"perturbed copies ({len(x)}) do not line up with the training frames ({len(ctx.X)})")
        ctx.scratch["aug"] = torch.from_numpy(x)
        counts = {}
        for name, _ in log:
            counts[name] = counts.get(name, 0) + 1
        ctx.report["perturbed_copies"] = counts

    def transform(ctx, x, y):
        import torch

        idx, flip = ctx.scratch["batch"]
        aug = ctx.scratch["aug"][idx]
        aug = torch.where(flip.view(-1, 1, 1, 1), torch.flip(aug, dims=(3,)), aug)
        use = torch.rand(len(x), generator=ctx.gen) < hp["p"]
        return torch.where(use.view(-1, 1, 1, 1), aug, x), y

    return Hooks(setup=[setup], transform=[transform])


register(Recipe("perturb-aug", "each sample replaced with probability p by its copy under a random deployment mismatch (vehicle pipeline)",
                "parity's own sweep findings (deployment-mismatch augmentation)", build,
                {"p": 0.5, "max_severity": 2, "perturbations": ",".join(DEPLOYMENT)}))
