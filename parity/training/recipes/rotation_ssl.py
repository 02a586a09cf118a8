"""`rotation-ssl`: an auxiliary self-supervised head that predicts whether the frame was rotated by
180 degrees, trained jointly on the backbone's pooled features (Hendrycks et al. 2019, "Using
self-supervised learning can improve model robustness and uncertainty"; rotations limited to 0/180
because the input is not square). The head lives outside the model: the saved checkpoint and its
ONNX export are the plain network."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def build(hp):
    def setup(ctx):
        import torch

        feats = {}
        ctx.scratch["rot_handle"] = ctx.model.pool.register_forward_hook(lambda m, a, out: feats.__setitem__("pool", out))
        ctx.scratch["rot_feats"] = feats
        n_feat = ctx.model.head[0].in_features
        head = torch.nn.Linear(n_feat, 2)
        ctx.scratch["rot_head"] = head
        ctx.extra_params.extend(head.parameters())

    def extra(ctx, x, y, logits):
        import torch
        import torch.nn.functional as F

        upright = ctx.scratch["rot_feats"]["pool"]  # from the classification forward on x, just before
        ctx.model(torch.flip(x, dims=(2, 3)))  # rotated by 180 degrees
        rotated = ctx.scratch["rot_feats"]["pool"]
        f = torch.cat([upright.flatten(1), rotated.flatten(1)])
        labels = torch.cat([torch.zeros(len(x), dtype=torch.long), torch.ones(len(x), dtype=torch.long)])
        return hp["weight"] * F.cross_entropy(ctx.scratch["rot_head"](f), labels)

    def finish(ctx):
        ctx.scratch.pop("rot_handle").remove()
        ctx.report["rotation_head"] = "trained jointly, not saved"
        return ctx.model

    return Hooks(setup=[setup], extra_loss=[extra], finish=[finish])


register(Recipe("rotation-ssl", "joint auxiliary head predicting a 180-degree rotation; dropped from the saved model",
                "Hendrycks et al. 2019, self-supervised rotation prediction", build, {"weight": 0.5}))
