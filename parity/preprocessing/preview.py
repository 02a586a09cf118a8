"""`parity perturb show`: what the model sees at severities 0..5 of one perturbation, as a PNG grid."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .. import atomic
from ..cases.format import Case
from ..errors import UsageError
from . import perturb
from .pipeline import Pipeline


def input_to_image(x: np.ndarray, pipe) -> np.ndarray:
    """One model input [3, h, w] back to uint8 RGB (undo normalisation and channel order)."""
    img = x.transpose(1, 2, 0) * np.asarray(pipe.std, np.float32) + np.asarray(pipe.mean, np.float32)
    img = img / np.float32(pipe.scale)
    if pipe.channel_order == "bgr":
        img = img[..., ::-1]
    return np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8)


def severity_grid(name: str, case: Case, frame: int, out, pipe: Pipeline, model=None, seed: int = 0, zoom: int = 2) -> Path:
    """`model` (a torch module) is needed only by perturbations that take a gradient (fgsm)."""
    from PIL import Image, ImageDraw

    p = perturb.get(name)
    frame = min(max(frame, 0), len(case) - 1)
    context = None
    if p.stage == "tensor" and p.name == "fgsm":
        if model is None:
            raise UsageError("fgsm needs --checkpoint (the gradient comes from the model)")
        clean = pipe.prepare(case, [frame])
        import torch

        with torch.inference_mode():
            target = model(torch.from_numpy(clean)).numpy().argmax(axis=1)
        context = lambda frames: {"model": model, "targets": target, "std": pipe.std}  # noqa: E731
    tiles = []
    for sev in range(6):
        applied = perturb.Applied(p if sev else None, sev, seed, case.name, context)
        fed, ts = applied.schedule(case.timestamps)
        src = int(fed[frame])
        if src < 0:
            img = np.zeros((*pipe.size, 3), np.uint8)
            note = "dropped"
        else:
            img = input_to_image(applied.pipeline(pipe).prepare(case, [src], hooks=applied.hooks())[0], pipe)
            note = f"frame {src} t={ts[frame]:.3f}s"
        im = Image.fromarray(img).resize((img.shape[1] * zoom, img.shape[0] * zoom), Image.NEAREST)
        d = ImageDraw.Draw(im)
        label = f"{name} severity {sev}" + (f" = {p.value(sev)} {p.unit}" if sev else " (unperturbed)") + f"   {note}"
        d.rectangle([0, 0, im.width, 14], fill=(0, 0, 0))
        d.text((3, 1), label, fill=(255, 255, 255))
        tiles.append(im)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (3 * w, 2 * h))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % 3) * w, (i // 3) * h))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic.write_bytes(out, buf.getvalue())
    return Path(out)
