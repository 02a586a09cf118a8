"""`uat-ot` and `uat-ft`: unsupervised adversarial training (Uesato et al. 2019, "Are labels required for
improving adversarial robustness?"): FGSM examples of frames used without their labels, trained
towards pseudo-targets: the current model's own predictions (`uat-ot`, online targets) or the fixed
predictions of the parent checkpoint (`uat-ft`, fixed targets). The supervised loss on labelled
frames stays. Unlabelled recordings are what a fleet has most of; here the training frames stand
in for them (their labels are not used by this term)."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register
from .fgsm import fgsm_example


def build(fixed: bool):
    def make(hp):
        def setup(ctx):
            if fixed:
                import torch

                teacher = ctx.adapter.build()
                teacher.load_state_dict(ctx.start)
                ctx.scratch["teacher"] = teacher.eval()
                for p in teacher.parameters():
                    p.requires_grad_(False)

        def extra(ctx, x, y, logits):
            import torch
            import torch.nn.functional as F

            idx = torch.randint(0, len(ctx.X), (len(x),), generator=ctx.gen)
            u = ctx.X[idx]  # frames whose labels this term does not read
            with torch.no_grad():
                pseudo = (ctx.scratch["teacher"] if fixed else ctx.model)(u).argmax(dim=1)
            adv = fgsm_example(ctx.model, u, pseudo, ctx.pipeline, hp["epsilon"], hp["alpha"], ctx.gen)
            return hp["weight"] * F.cross_entropy(ctx.model(adv), pseudo)

        return Hooks(setup=[setup], extra_loss=[extra])

    return make


register(Recipe("uat-ot", "adversarial training on unlabelled frames towards the model's own online pseudo-targets",
                "Uesato et al. 2019, UAT-OT", build(False), {"epsilon": 4.0, "alpha": 5.0, "weight": 0.5}))
register(Recipe("uat-ft", "adversarial training on unlabelled frames towards the parent's fixed pseudo-targets",
                "Uesato et al. 2019, UAT-FT", build(True), {"epsilon": 4.0, "alpha": 5.0, "weight": 0.5}, needs_parent=True))
