"""`l2-sp`: fine-tuning regularised towards the starting point (Li, Grandvalet & Davoine 2018,
"Explicit inductive bias for transfer learning with convolutional networks"): alpha/2 * ||w - w0||^2
over the parent's weights, the robust fine-tuning regulariser family of the second source document
(selective projection decay and trainable projection constrain the same distance)."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def l2sp_penalty(model, start: dict, alpha: float):
    import torch

    total = torch.zeros(())
    for name, p in model.named_parameters():
        if p.requires_grad and name in start:
            total = total + ((p - start[name]) ** 2).sum()
    return 0.5 * alpha * total


def build(hp):
    return Hooks(extra_loss=[lambda ctx, x, y, logits: l2sp_penalty(ctx.model, ctx.start, hp["alpha"])])


register(Recipe("l2-sp", "fine-tune from --from with an L2 penalty towards its weights", "Li et al. 2018, L2-SP", build,
                {"alpha": 0.01}, needs_parent=True))
