"""`parity train`: the reference row-anchor model, trained on synthetic cases under the training pipeline.

Deterministic for a seed on a given machine and torch build (fixed thread count, seeded shuffles
and init). Method "erm" is plain empirical risk minimisation; later methods reuse this loop.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..cases.format import Case, load_case
from ..cases.lanes import resample_rows
from ..metrics.tusimple import tusimple_batch
from ..models.checkpoint import Checkpoint, save_checkpoint
from ..models.rowanchor import RowAnchorAdapter, RowAnchorConfig
from ..provenance import git_sha, sha256_json

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
) -> Checkpoint:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    adapter = RowAnchorAdapter(config or RowAnchorConfig())
    cases = [load_case(p) for p in train_cases]
    held_out = [load_case(p) for p in eval_cases]
    t0 = time.perf_counter()
    X, GT, W = load_training_set(cases, adapter)
    width = float(W[0])
    if not np.all(W == width):
        raise ValueError("training cases must share one image width")  # the column grid is per width
    # Mirrored copies: flip the image, mirror x, and swap lanes left<->right.
    Xf = X[..., ::-1].copy()
    GTf = (width - 1 - GT)[:, ::-1, :]
    Y = torch.from_numpy(adapter.targets(GT, width))
    Yf = torch.from_numpy(adapter.targets(GTf, width))
    X, Xf = torch.from_numpy(X), torch.from_numpy(Xf)
    prep_s = time.perf_counter() - t0

    model = adapter.build()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(X)
    steps = epochs * (n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    history = []
    from tqdm import tqdm

    bar = tqdm(total=steps, desc="train", unit="step", disable=None if progress else True)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        total = 0.0
        for b in range(n // batch_size):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            f = flip[idx]
            xb = torch.where(f.view(-1, 1, 1, 1), Xf[idx], X[idx])
            yb = torch.where(f.view(-1, 1, 1), Yf[idx], Y[idx])
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            bar.update(1)
        history.append(round(total / max(n // batch_size, 1), 5))
        bar.set_postfix(epoch=epoch + 1, loss=history[-1])
    bar.close()
    model.eval()
    train_s = time.perf_counter() - t0 - prep_s

    metrics = {}
    if held_out:
        metrics["held_out_training_pipeline"] = evaluate(model, adapter, held_out, "training")
        metrics["held_out_vehicle_pipeline"] = evaluate(model, adapter, held_out, "vehicle")
    meta = {
        "method": "erm",
        "config": adapter.config.to_dict(),
        "hyperparameters": {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "seed": seed, "threads": threads, "optimizer": "AdamW", "schedule": "OneCycle", "augment": ["hflip"],
            "pipeline": "training",
        },
        "data": {
            "train_cases": [c.name for c in cases],
            "frames": int(n),
            "hash": sha256_json(sorted(c.content_hash() for c in cases)),
            "eval_cases": [c.name for c in held_out],
        },
        "parents": [],
        "git_sha": git_sha(),
        "loss_history": history,
        "timing_s": {"prepare": round(prep_s, 1), "train": round(train_s, 1)},
        "metrics": metrics,
    }
    return save_checkpoint(out, model, meta)
