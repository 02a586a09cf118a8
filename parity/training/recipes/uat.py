"""`uat-ot` and `uat-ft`: unsupervised adversarial training (Uesato et al. 2019, "Are labels required for
improving adversarial robustness?"): FGSM examples of frames used without their labels, trained
towards pseudo-targets: `uat-ot` (online targets) a divergence, KL(p || p_adv), from the current
model's own soft predictions p on the clean frame, the attack pushing against that same
divergence; `uat-ft` (fixed targets) cross-entropy to the parent checkpoint's fixed hard predictions. The supervised loss on labelled
frames stays. Unlabelled recordings are what a fleet has most of and the method's point: with
`--unlabelled-cases` (the `unlabelled` suite: 96 cases, twice the training suite, written without
GT) the term draws from them; without, from the training frames (their labels unread)."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register
from .fgsm import fgsm_example


def soft_divergence(logits, target_probs):
    """KL(target || softmax(logits)) over the class axis (1), averaged over every other position."""
    import torch.nn.functional as F

    logp = F.log_softmax(logits, dim=1)
    return (target_probs * (target_probs.clamp_min(1e-12).log() - logp)).sum(dim=1).mean()


def build(fixed: bool):
    def make(hp):
        def setup(ctx):
            paths = ctx.scratch["train_args"].get("unlabelled_cases") or []
            if paths:
                import torch

                from ...cases.format import load_case
                from ..loop import load_unlabelled

                ctx.scratch["unlabelled"] = torch.from_numpy(load_unlabelled([load_case(p) for p in paths], ctx.adapter))
            pool = ctx.scratch.get("unlabelled", ctx.X)
            ctx.report["unlabelled_source"] = "unlabelled cases" if paths else "training frames, labels unread"
            ctx.report["unlabelled_frames"] = int(len(pool))
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

            pool = ctx.scratch.get("unlabelled", ctx.X)
            idx = torch.randint(0, len(pool), (len(x),), generator=ctx.gen)
            u = pool[idx]  # frames whose labels this term does not read
            with torch.no_grad():
                if fixed:
                    target = ctx.scratch["teacher"](u).argmax(dim=1)
                else:
                    target = F.softmax(ctx.model(u), dim=1)  # the model's own soft prediction, a constant here
            adv = fgsm_example(ctx.model, u, target, ctx.pipeline, hp["epsilon"], hp["alpha"], ctx.gen)
            out = ctx.model(adv)
            return hp["weight"] * (F.cross_entropy(out, target) if fixed else soft_divergence(out, target))

        return Hooks(setup=[setup], extra_loss=[extra])

    return make


register(Recipe("uat-ot", "adversarial training on unlabelled frames: KL divergence from the model's own online soft predictions",
                "Uesato et al. 2019, UAT-OT", build(False), {"epsilon": 4.0, "alpha": 5.0, "weight": 0.5}))
register(Recipe("uat-ft", "adversarial training on unlabelled frames towards the parent's fixed pseudo-targets",
                "Uesato et al. 2019, UAT-FT", build(True), {"epsilon": 4.0, "alpha": 5.0, "weight": 0.5}, needs_parent=True))
