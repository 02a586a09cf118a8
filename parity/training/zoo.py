"""`parity zoo` / `make zoo`: every training recipe applied to the reference model, into one folder.

Each recipe fine-tunes the ERM reference (`--from`) for a few epochs on the training suite, once
per seed (`--seeds`: data order, augmentation, attack noise and any re-initialisation), `erm`
included (so every candidate has had the same extra training); a checkpoint is reused when its
sidecar's `zoo_key` matches: a hash of the recipe, its settings, the loop settings, the training
data, the parent's weights and the training code. Checkpoints are written atomically one by one,
so an interrupted zoo resumes with the first recipe not yet built. `zoo.json` lists each
checkpoint's wall time and held-out accuracy on both pipelines.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .. import atomic
from ..provenance import sha256_json

# 4, not the single-seed zoo's 8: three seeds of all 16 recipes then fit about 90 minutes on 2 cores,
# and a shorter fine-tune moves less far from the reference it starts from.
ZOO_EPOCHS = 4
ZOO_LR = 5e-4


def code_hash(recipe) -> str:
    """Hash of the code that trains with `recipe`: the loop, the registry and the recipe's own module
    (adding a recipe does not rebuild the others; changing the loop rebuilds all)."""
    import sys

    h = hashlib.sha256()
    root = Path(__file__).parent
    files = [root / "loop.py", root / "recipes" / "__init__.py", Path(sys.modules[recipe.build.__module__].__file__)]
    for p in files:
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def zoo_name(method: str, seed: int) -> str:
    """A zoo checkpoint's file stem: `<method>` for seed 0 (the single-seed zoo's names), `<method>-s<seed>` for the others."""
    return method if seed == 0 else f"{method}-s{seed}"


def build_zoo(train_cases, eval_cases, parent, out, methods=None, epochs=ZOO_EPOCHS, lr=ZOO_LR, batch_size=32, seeds=(0,),
              threads=2, progress=True, log=print, select_cases=(), unlabelled_cases=()) -> list[dict]:
    from ..cases.format import load_case
    from ..models.checkpoint import load_checkpoint
    from .loop import train
    from .recipes import all_recipes, get_recipe

    out = Path(out)
    parent_ck = load_checkpoint(parent)
    names = list(all_recipes()) if not methods else [get_recipe(m).name for m in methods]
    data = sha256_json(sorted(load_case(p).content_hash() for p in train_cases))
    held = sha256_json(sorted(load_case(p).content_hash() for p in eval_cases))
    chosen_on = sha256_json(sorted(load_case(p).content_hash() for p in select_cases))
    unlabelled = sha256_json(sorted(load_case(p).content_hash() for p in unlabelled_cases))
    rows = []
    todo = [(name, seed) for seed in seeds for name in names]  # seed by seed: an interrupted zoo has whole seeds first
    for k, (name, seed) in enumerate(todo, 1):
        recipe = get_recipe(name)
        hp = recipe.resolve({})
        key = sha256_json({"recipe": name, "settings": hp, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
                           "data": data, "held_out": held, "select": chosen_on, "unlabelled": unlabelled, "parent": parent_ck.sha256, "code": code_hash(recipe)})
        pt, side = out / f"{zoo_name(name, seed)}.pt", out / f"{zoo_name(name, seed)}.json"
        meta = json.loads(side.read_text()) if side.is_file() and pt.is_file() else {}
        if meta.get("zoo_key") == key:
            log(f"[{k}/{len(todo)}] {name} seed {seed}: up to date")
        else:
            start = time.perf_counter()
            log(f"[{k}/{len(todo)}] {name} seed {seed}: training ({recipe.summary})")
            ck = train(train_cases, pt, eval_cases=eval_cases, select_cases=select_cases, unlabelled_cases=unlabelled_cases, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       threads=threads, progress=progress, method=name, parent=parent_ck.path,
                       extra_meta={"zoo_key": key, "zoo_wall_s": None})
            meta = dict(ck.meta, zoo_wall_s=round(time.perf_counter() - start, 1))
            atomic.write_json(side, meta)  # the wall time includes evaluation, so it is written after
            log(f"[{k}/{len(todo)}] {name} seed {seed}: {meta['zoo_wall_s']:.0f} s")
        m = meta.get("metrics", {})
        rows.append({
            "method": name, "seed": seed, "wall_s": meta.get("zoo_wall_s"),
            "accuracy_training": m.get("held_out_training_pipeline", {}).get("overall", {}).get("accuracy"),
            "accuracy_vehicle": m.get("held_out_vehicle_pipeline", {}).get("overall", {}).get("accuracy"),
            "checkpoint": str(pt),
        })
    atomic.write_json(out / "zoo.json", {"parent": str(parent_ck.path), "parent_sha256": parent_ck.sha256, "epochs": epochs,
                                         "lr": lr, "seeds": list(seeds), "checkpoints": rows})
    return rows
