"""Model probes the claims table needs beyond the deployment board: accuracy under an FGSM attack
(adversarial robustness, the measure of the FGSM, UAT and lazy-training papers) and accuracy under
random weight noise (the width of the optimum, SWA's claim).

Both are per checkpoint x case sums and counts of TuSimple accuracy over labelled frames (every
`every`-th), so the claims table resamples cases and seeds the way the board does. The attack is the
classic one-step FGSM (Goodfellow et al. 2015) from the clean frame, epsilon in 8-bit pixel levels
of the camera image, clipped to what an 8-bit frame can hold (the training recipe's units,
recipes/fgsm.py). The weight noise is per tensor: N(0, (sigma * ||W|| / sqrt(numel))^2) on every
conv/linear weight, so a layer's noise is `sigma` of its own RMS weight (the filter-wise scaling
of Li et al. 2018 at tensor granularity); the draws are seeded and the same for every checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cases.lanes import resample_rows
from ..metrics.tusimple import tusimple_batch

PROBES = ("clean", "fgsm", "weight_noise")


@dataclass(frozen=True)
class ProbeSettings:
    every: int = 4  # every n-th labelled frame
    epsilon_levels: float = 2.0  # FGSM step, 8-bit levels
    noise_sigma: float = 0.05  # weight noise, share of each tensor's RMS weight
    noise_draws: int = 3
    noise_seed: int = 0
    pipeline: str = "training"  # the model's own input: robustness of the model, not of a deployment


@dataclass
class ProbeInputs:
    """One case's probe frames, prepared once and shared by every checkpoint."""
    case: str
    x: np.ndarray  # float32 [N, 3, H, W]
    gt: np.ndarray  # GT on the case's rows [N, L, R]
    targets: np.ndarray  # the adapter's class targets [N, ...]
    anchor_rows: np.ndarray
    height: int
    width: int


def prepare(case, adapter, settings: ProbeSettings) -> ProbeInputs | None:
    """The case's probe frames, or None for a case without labelled frames."""
    if case.gt is None:
        return None
    idx = np.flatnonzero(case.labelled)[:: settings.every]
    if not len(idx):
        return None
    pipe = adapter.pipelines()[settings.pipeline]
    x = np.concatenate([pipe.prepare(case, idx[s : s + 64]) for s in range(0, len(idx), 64)])
    gt_model_rows = resample_rows(case.gt[idx], case.anchor_rows, adapter.anchor_rows(case.height))
    return ProbeInputs(case.name, x, case.gt[idx], adapter.targets(gt_model_rows, float(case.width)), case.anchor_rows,
                       case.height, case.width)


def _accuracy(adapter, outputs: np.ndarray, inp: ProbeInputs) -> np.ndarray:
    pred = resample_rows(adapter.decode(outputs, inp.width), adapter.anchor_rows(inp.height), inp.anchor_rows)
    return tusimple_batch(pred, inp.gt, inp.anchor_rows, inp.width)[:, 0]


def fgsm_images(model, x, y, pipeline, eps_levels: float):
    """x + eps * sign(grad_x CE(model(x), y)), clipped to the valid pixel range (no random start)."""
    import torch
    import torch.nn.functional as F

    from .recipes.fgsm import input_units

    eps, lo, hi = input_units(pipeline, eps_levels)
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return torch.clamp(x.detach() + eps * grad.sign(), lo, hi)


def noisy_state(model, sigma: float, seed: int) -> dict:
    """The model's state with seeded per-tensor Gaussian noise on every conv/linear weight."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = state[f"{name}.weight"]
            scale = sigma * float(torch.linalg.vector_norm(w.float())) / np.sqrt(w.numel())
            state[f"{name}.weight"] = w + scale * torch.randn(w.shape, generator=gen, dtype=w.dtype)
    return state


def _forward(model, x, batch: int) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(x[s : s + batch]).numpy() for s in range(0, len(x), batch)])


def probe(model, adapter, inputs: list[ProbeInputs], settings: ProbeSettings, batch: int = 64) -> list[dict[str, tuple[float, int]]]:
    """Per case of `inputs`: {probe: (sum of per-frame accuracy, frames)} for one checkpoint. The weight
    noise is drawn once per draw for all cases (the same draws for every checkpoint: seeded)."""
    import torch

    pipe = adapter.pipelines()[settings.pipeline]
    model = model.eval()
    out = []
    for inp in inputs:
        x, y = torch.from_numpy(inp.x), torch.from_numpy(inp.targets)
        adv = torch.cat([fgsm_images(model, x[s : s + batch], y[s : s + batch], pipe, settings.epsilon_levels) for s in range(0, len(x), batch)])
        out.append({"clean": _accuracy(adapter, _forward(model, x, batch), inp), "fgsm": _accuracy(adapter, _forward(model, adv, batch), inp)})
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    noisy = [[] for _ in inputs]
    try:
        for d in range(settings.noise_draws):
            model.load_state_dict(noisy_state(model, settings.noise_sigma, settings.noise_seed + d))
            for i, inp in enumerate(inputs):
                noisy[i].append(_accuracy(adapter, _forward(model, torch.from_numpy(inp.x), batch), inp))
            model.load_state_dict(trained)
    finally:
        model.load_state_dict(trained)
    for rec, acc in zip(out, noisy):
        rec["weight_noise"] = np.mean(acc, axis=0)
    return [{k: (float(np.sum(v)), int(len(v))) for k, v in rec.items()} for rec in out]
