"""`perturb-aug`: training with parity's own deployment mismatches as augmentation: the fix that
follows from what replay and sweep find. Each training frame also gets one perturbed copy, made
once before training by the **vehicle** pipeline (NV12, the deployed preprocessing) with a
deployment perturbation and a parameter drawn per frame, seeded; each batch sample is replaced by
its perturbed copy with probability `p` (mirrored with it).

What it trains on is held apart from what `parity rank` evaluates (TRAIN_RANGES, docs/ranking.md):
continuous parameters drawn from ranges that never hit a severity grid value the rank uses (crop
offsets of 1, 3, 5, 6, 7 px where the grid has 2, 4, 8, 16, 32; YUV matrix/range, normalisation,
channel-order blends and pixel-centre shifts from open intervals between grid points), and two
deployment families never trained on at all (`resize_kernel`, `uint8_rounding`): they are the
rank's held-out mismatches, with every camera, photometric, codec and temporal perturbation. The
labels are not moved: crop offsets stay small, so the model learns to tolerate a slightly misplaced
ROI rather than to follow it."""
from __future__ import annotations

import numpy as np

from ..loop import Hooks
from . import Recipe, register

DEPLOYMENT = ("crop_shift_x", "crop_shift_y", "resize_kernel", "pixel_centre", "yuv_matrix", "yuv_range", "norm_mismatch",
              "uint8_rounding", "channel_swap")
# perturbation -> ("int", choices) or ("float", (low, high)): training parameters off every severity grid value.
TRAIN_RANGES = {
    "crop_shift_x": ("int", (1, 3, 5, 6, 7)), "crop_shift_y": ("int", (1, 3, 5, 6, 7)),
    "pixel_centre": ("float", (0.02, 0.6)), "yuv_matrix": ("float", (0.02, 0.6)), "yuv_range": ("float", (0.02, 0.6)),
    "norm_mismatch": ("float", (0.02, 0.6)), "channel_swap": ("float", (0.02, 0.6)),
}
HELD_OUT = tuple(n for n in DEPLOYMENT if n not in TRAIN_RANGES)  # never trained on: only the rank sees them


def draw_parameter(name: str, rng: np.random.Generator):
    """A training parameter for `name`, off its severity grid (re-drawn in the measure-zero case it lands on one)."""
    from ...preprocessing import perturb

    kind, spec = TRAIN_RANGES[name]
    grid = set(perturb.get(name).values)
    while True:
        v = int(rng.choice(spec)) if kind == "int" else float(rng.uniform(*spec))
        if v not in grid:
            return v


def perturbed_copies(cases, adapter, names, seed: int) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """One perturbed vehicle-pipeline input per labelled frame, in load_training_set's order, and what was applied."""
    from ...errors import UsageError
    from ...preprocessing import perturb

    bad = [n for n in names if n not in TRAIN_RANGES]
    if bad:
        raise UsageError(f"perturb-aug: {bad[0]!r} is held out for evaluation (trainable: {', '.join(TRAIN_RANGES)})")
    pipe = adapter.pipelines()["vehicle"]
    rng = np.random.default_rng(seed)
    out, applied_log = [], []
    for case in cases:
        if case.gt is None:
            continue
        labelled = np.flatnonzero(case.labelled)
        xs = np.empty((len(labelled), *adapter.input_shape()), np.float32)
        for j, f in enumerate(labelled):
            name = names[int(rng.integers(0, len(names)))]
            v = draw_parameter(name, rng)
            a = perturb.Applied(perturb.get(name), 1, seed, case.name, value=v)
            xs[j] = a.pipeline(pipe).prepare(case, [f], hooks=a.hooks())[0]
            applied_log.append((name, v))
        out.append(xs)
    return np.concatenate(out), applied_log


def build(hp):
    names = [n for n in hp["perturbations"].split(",") if n]

    def setup(ctx):
        import torch

        from ...cases.format import load_case

        cases = [load_case(p) for p in ctx.scratch["train_args"]["train_cases"]]
        x, log = perturbed_copies(cases, ctx.adapter, names, ctx.scratch["train_args"]["seed"])
        if len(x) != len(ctx.X):
            raise RuntimeError(f"perturbed copies ({len(x)}) do not line up with the training frames ({len(ctx.X)})")
        ctx.scratch["aug"] = torch.from_numpy(x)
        counts = {}
        for name, _ in log:
            counts[name] = counts.get(name, 0) + 1
        ctx.report["perturbed_copies"] = counts
        ctx.report["held_out_for_evaluation"] = list(HELD_OUT)

    def transform(ctx, x, y):
        import torch

        idx, flip = ctx.scratch["batch"]
        aug = ctx.scratch["aug"][idx]
        aug = torch.where(flip.view(-1, 1, 1, 1), torch.flip(aug, dims=(3,)), aug)
        use = torch.rand(len(x), generator=ctx.gen) < hp["p"]
        return torch.where(use.view(-1, 1, 1, 1), aug, x), y

    return Hooks(setup=[setup], transform=[transform])


register(Recipe("perturb-aug", "each sample replaced with probability p by its copy under a random deployment mismatch (vehicle pipeline), "
                "parameters off the rank's severity grid, resize_kernel and uint8_rounding held out",
                "parity's own sweep findings (deployment-mismatch augmentation)", build,
                {"p": 0.5, "perturbations": ",".join(TRAIN_RANGES)}))
