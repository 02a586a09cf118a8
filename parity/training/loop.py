"""`parity train`: one seeded training loop for the reference row-anchor model, with small hooks.

A recipe (parity/training/recipes/) composes hooks; the loop never changes per method:
- `setup(ctx)`: before the first step (re-initialise layers, add an auxiliary head's parameters);
- `transform(ctx, x, y) -> (x, y)`: the batch the loss sees (adversarial examples, augmentation;
  `ctx.scratch["batch"]` holds the batch's frame indices and mirror flags);
- `extra_loss(ctx, x, y, logits) -> tensor`: added to the cross-entropy (mixup, regularisers);
- `after_step(ctx)` / `after_epoch(ctx)`: step modifiers and weight averaging (quantise weights,
  update an EMA or SWA average);
- `finish(ctx) -> model`: the post-hoc weight operation that makes the saved model (an average with
  its batch-norm statistics recomputed, an interpolation, a soup).

Deterministic for a seed on a given machine and torch build (fixed thread count, seeded shuffles
and init). Every checkpoint's sidecar records the method, its hyper-parameters, the parent
checkpoint's hash, data hash, seed, git sha, training curve, wall time, held-out metrics and the
laziness diagnostic (per-layer relative weight change from where training started).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..cases.format import Case, load_case
from ..cases.lanes import resample_rows
from ..metrics.tusimple import tusimple_batch
from ..models.checkpoint import Checkpoint, save_checkpoint
from ..models.rowanchor import RowAnchorAdapter, RowAnchorConfig
from ..provenance import git_sha, machine, sha256_json
from .initial import laziness, save_initial

log = logging.getLogger(__name__)


def _gt_on_model_rows(case: Case, adapter: RowAnchorAdapter) -> np.ndarray:
    return resample_rows(case.gt, case.anchor_rows, adapter.anchor_rows(case.height))


def load_training_set(cases: list[Case], adapter: RowAnchorAdapter, pipeline_name: str = "training"):
    """All frames preprocessed once: (inputs float32 [N,3,H,W], GT x [N,L,R] in source px, widths [N])."""
    pipe = adapter.pipelines()[pipeline_name]
    xs, gts, widths = [], [], []
    for case in cases:
        if case.gt is None:
            continue
        labelled = np.flatnonzero(case.labelled)
        for start in range(0, len(labelled), 64):
            xs.append(pipe.prepare(case, labelled[start : start + 64]))
        gts.append(_gt_on_model_rows(case, adapter)[labelled])
        widths.append(np.full(len(labelled), case.width, dtype=np.float32))
    return np.concatenate(xs), np.concatenate(gts), np.concatenate(widths)


def load_unlabelled(cases: list[Case], adapter, pipeline_name: str = "training") -> np.ndarray:
    """Every frame of `cases` preprocessed, float32 [N,3,H,W]; their GT, if any, is never read (what UAT learns from)."""
    pipe = adapter.pipelines()[pipeline_name]
    xs = [pipe.prepare(c, np.arange(s, min(s + 64, len(c)))) for c in cases for s in range(0, len(c), 64)]
    return np.concatenate(xs) if xs else np.zeros((0, *adapter.input_shape()), np.float32)


def predict(model, adapter: RowAnchorAdapter, inputs: np.ndarray, width: int, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(inputs), batch):
            out.append(adapter.decode(model(torch.from_numpy(inputs[i : i + batch])).numpy(), width))
    return np.concatenate(out)


def evaluate(model, adapter: RowAnchorAdapter, cases: list[Case], pipeline_name: str = "training") -> dict:
    """Mean TuSimple accuracy/FP/FN per case and overall (frames weighted equally)."""
    pipe = adapter.pipelines()[pipeline_name]
    per_case, all_rows = {}, []
    for case in cases:
        labelled = np.flatnonzero(case.labelled)
        inputs = np.concatenate([pipe.prepare(case, labelled[s : s + 64]) for s in range(0, len(labelled), 64)])
        pred = predict(model, adapter, inputs, case.width)
        # Scored at the case's own GT rows, predictions moved onto them: as replay and the exporters do.
        pred = resample_rows(pred, adapter.anchor_rows(case.height), case.anchor_rows)
        scores = tusimple_batch(pred, case.gt[labelled], case.anchor_rows, case.width)
        per_case[case.name] = dict(zip(("accuracy", "fp", "fn"), scores.mean(axis=0).round(4).tolist()))
        all_rows.append(scores)
    overall = np.concatenate(all_rows).mean(axis=0)
    return {"overall": dict(zip(("accuracy", "fp", "fn"), overall.round(4).tolist())), "cases": per_case}


@dataclass
class Hooks:
    setup: list[Callable] = field(default_factory=list)
    transform: list[Callable] = field(default_factory=list)
    extra_loss: list[Callable] = field(default_factory=list)
    after_step: list[Callable] = field(default_factory=list)
    after_epoch: list[Callable] = field(default_factory=list)
    finish: list[Callable] = field(default_factory=list)

    def __add__(self, other: "Hooks") -> "Hooks":
        return Hooks(*(getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__))


@dataclass
class Context:
    """What hooks may read and change: the model, optimiser, data, settings and a scratch dict."""

    model: Any
    adapter: RowAnchorAdapter
    opt: Any
    hp: dict
    X: Any  # normalised training inputs [N, 3, H, W] (torch)
    Y: Any  # targets [N, R, L]
    width: float
    pipeline: Any  # the training pipeline (mean, std, scale: what pixel levels mean in input units)
    gen: Any  # the seeded torch.Generator of the run
    start: dict  # weights the run started from (init, or the parent checkpoint)
    held_out: list = field(default_factory=list)  # cases the sidecar reports accuracy on (never used for a choice)
    select: list = field(default_factory=list)  # cases a recipe makes its choices on (alpha, ingredients): the validation suite
    step: int = 0
    epoch: int = 0
    epochs: int = 0
    steps: int = 0
    extra_params: list = field(default_factory=list)  # auxiliary parameters a hook adds (dropped at save)
    sched: Any = None  # the learning-rate schedule stepped after every step; a hook may replace it (SWA's SWALR)
    scratch: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # what a recipe wants in the sidecar


def _adapter(parent_ck, name, config_dict, config, out):
    """(adapter name, adapter) to train: the parent's when fine-tuning, else the one named, else the reference family."""
    from ..errors import UsageError
    from ..models.checkpoint import make_adapter

    if parent_ck is not None:
        if name and name != parent_ck.meta["adapter"]:
            raise UsageError(f"--adapter {name}: the parent {parent_ck.path} is a {parent_ck.meta['adapter']} model")
        return parent_ck.meta["adapter"], parent_ck.adapter()
    if name:
        return name, make_adapter(name, config_dict or {}, Path(out))
    return "rowanchor", RowAnchorAdapter(config or RowAnchorConfig())


def train(
    train_cases: list[str | Path],
    out: str | Path,
    eval_cases: list[str | Path] = (),
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    threads: int = 2,
    config: RowAnchorConfig | None = None,
    progress: bool = True,
    method: str = "erm",
    parent: str | Path | None = None,
    settings: dict | None = None,
    extra_meta: dict | None = None,
    adapter_name: str | None = None,
    adapter_config: dict | None = None,
    select_cases: list[str | Path] = (),
    unlabelled_cases: list[str | Path] = (),
) -> Checkpoint:
    import torch
    import torch.nn.functional as F

    from ..errors import UsageError
    from ..models.checkpoint import load_checkpoint
    from .recipes import get_recipe

    recipe = get_recipe(method)
    hp = recipe.resolve(settings or {})
    if recipe.needs_parent and parent is None:
        raise UsageError(f"method {method!r} fine-tunes a trained model: give --from CHECKPOINT (e.g. checkpoints/reference.pt)")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    parent_ck = load_checkpoint(parent) if parent else None
    adapter_name, adapter = _adapter(parent_ck, adapter_name, adapter_config, config, out)
    if not hasattr(adapter, "targets"):
        raise UsageError(f"the {adapter_name} adapter provides no training targets and loss (parity trains models whose adapter does); "
                         "it can be imported, replayed, captured and localized")
    cases = [load_case(p) for p in train_cases]
    held_out = [load_case(p) for p in eval_cases]
    select = [load_case(p) for p in select_cases]
    t0 = time.perf_counter()
    X, GT, W = load_training_set(cases, adapter)
    width = float(W[0])
    if not np.all(W == width):
        raise ValueError("training cases must share one image width")  # the column grid is per width
    n = len(X)
    if n < batch_size:
        raise UsageError(f"{n} labelled training frames, fewer than one batch of {batch_size}: lower --batch-size or add cases")
    # Mirrored copies: flip the image, mirror x, and swap lanes left<->right.
    Xf = X[..., ::-1].copy()
    GTf = (width - 1 - GT)[:, ::-1, :]
    Y = torch.from_numpy(adapter.targets(GT, width))
    Yf = torch.from_numpy(adapter.targets(GTf, width))
    X, Xf = torch.from_numpy(X), torch.from_numpy(Xf)
    prep_s = time.perf_counter() - t0

    model = parent_ck.build_model() if parent_ck else adapter.build()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    init_weights = None if parent_ck else save_initial(Path(out), start)  # checkpoint 0, for re-initialisation (training/initial.py)
    gen = torch.Generator().manual_seed(seed)
    ctx = Context(model, adapter, None, hp, X, Y, width, adapter.pipelines()["training"], gen, start, held_out, select)
    ctx.scratch["train_args"] = {  # what a recipe needs to train more ingredients the same way (soups)
        "train_cases": [str(p) for p in train_cases], "eval_cases": [str(p) for p in eval_cases],
        "select_cases": [str(p) for p in select_cases], "unlabelled_cases": [str(p) for p in unlabelled_cases], "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed, "threads": threads,
        "parent": str(parent_ck.path) if parent_ck else None, "out": str(out),
    }
    hooks = recipe.build(hp)
    for h in hooks.setup:
        h(ctx)
    opt = torch.optim.AdamW(list(model.parameters()) + ctx.extra_params, lr=lr, weight_decay=weight_decay)
    ctx.opt = opt
    steps = epochs * (n // batch_size)
    ctx.steps, ctx.epochs = steps, epochs
    ctx.sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    history = []
    from tqdm import tqdm

    bar = tqdm(total=steps, desc=f"train {method}", unit="step", disable=None if progress else True)
    model.train()
    for epoch in range(epochs):
        ctx.epoch = epoch
        perm = torch.randperm(n, generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        total = 0.0
        for b in range(n // batch_size):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            f = flip[idx]
            xb = torch.where(f.view(-1, 1, 1, 1), Xf[idx], X[idx])
            yb = torch.where(f.view(-1, 1, 1), Yf[idx], Y[idx])
            ctx.scratch["batch"] = (idx, f)  # which frames (rows of ctx.X) and which are mirrored
            for h in hooks.transform:
                xb, yb = h(ctx, xb, yb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            for h in hooks.extra_loss:
                loss = loss + h(ctx, xb, yb, logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ctx.sched.step()
            ctx.step += 1
            for h in hooks.after_step:
                h(ctx)
            total += float(loss.detach())
            bar.update(1)
        for h in hooks.after_epoch:
            h(ctx)
        history.append(round(total / max(n // batch_size, 1), 5))
        bar.set_postfix(epoch=epoch + 1, loss=history[-1])
    bar.close()
    for h in hooks.finish:
        ctx.model = h(ctx)
    model = ctx.model.eval()
    train_s = time.perf_counter() - t0 - prep_s

    metrics = {}
    if held_out:
        metrics["held_out_training_pipeline"] = evaluate(model, adapter, held_out, "training")
        metrics["held_out_vehicle_pipeline"] = evaluate(model, adapter, held_out, "vehicle")
    meta = {
        "method": method,
        "adapter": adapter_name,
        "config": adapter.config.to_dict(),
        "hyperparameters": {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "seed": seed, "threads": threads, "optimizer": "AdamW", "schedule": "OneCycle", "augment": ["hflip"],
            "pipeline": "training", "recipe": hp,
        },
        "data": {
            "train_cases": [c.name for c in cases],
            "frames": int(n),
            "hash": sha256_json(sorted(c.content_hash() for c in cases)),
            "eval_cases": [c.name for c in held_out],
            "select_cases": [c.name for c in select],
            "select_hash": sha256_json(sorted(c.content_hash() for c in select)) if select else None,
        },
        "parents": [{"path": str(parent_ck.path), "sha256": parent_ck.sha256, "method": parent_ck.meta.get("method")}] if parent_ck else [],
        "git_sha": git_sha(),
        "trained_on": machine(),  # training is deterministic on one machine, not across CPUs: say which
        "loss_history": history,
        "timing_s": {"prepare": round(prep_s, 1), "train": round(train_s, 1)},
        "metrics": metrics,
        "laziness": {"reference": "parent checkpoint" if parent_ck else "initialisation", "relative_weight_change": laziness(model, start)},
        **({"init_weights": init_weights} if init_weights else {}),
        **({"recipe_report": ctx.report} if ctx.report else {}),
        **(extra_meta or {}),
    }
    return save_checkpoint(out, model, meta)
