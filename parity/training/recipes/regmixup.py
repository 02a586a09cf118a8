"""`regmixup`: mixup as an extra loss beside the clean cross-entropy (Pinto et al. 2022, "RegMixup:
Mixup as a regularizer can surprisingly improve accuracy and out-of-distribution robustness"):
lambda ~ Beta(a, a) with a large a (10: mixes near the middle), loss = CE(clean) + w * mixed CE."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def mixed_loss(model, x, y, lam: float, perm):
    import torch.nn.functional as F

    out = model(lam * x + (1 - lam) * x[perm])
    return lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])


def build(hp):
    def extra(ctx, x, y, logits):
        import torch

        lam = float(torch.distributions.Beta(hp["alpha"], hp["alpha"]).sample())
        perm = torch.randperm(len(x), generator=ctx.gen)
        return hp["weight"] * mixed_loss(ctx.model, x, y, lam, perm)

    return Hooks(extra_loss=[extra])


register(Recipe("regmixup", "mixup cross-entropy added to the clean loss", "Pinto et al. 2022, RegMixup", build,
                {"alpha": 10.0, "weight": 1.0}))
