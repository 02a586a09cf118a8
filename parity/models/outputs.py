"""A model's named outputs: one tensor (`output_name`: logits) or several (`output_names`: UFLDv2's
loc_row, loc_col, exist_row, exist_col), how a module's return value is named, how they decode.

Everything that runs or compares outputs goes through these three functions, so a model with any
number of named outputs is run, exported, compared per output, captured and decoded alike.
"""
from __future__ import annotations

import numpy as np


def output_names(adapter) -> tuple[str, ...]:
    names = getattr(adapter, "output_names", None)
    return tuple(names) if names else (adapter.output_name,)


def named_outputs(names, out) -> dict[str, np.ndarray]:
    """A torch module's return value (a tensor, a tuple/list in `names` order, or a dict) as {name: fp32 array}."""
    names = (names,) if isinstance(names, str) else tuple(names)
    if isinstance(out, dict):
        values = [out[n] for n in names]
    elif isinstance(out, (tuple, list)):
        values = list(out)[: len(names)]
    else:
        values = [out]
    return {n: np.asarray(v.float().numpy() if hasattr(v, "numpy") else v, dtype=np.float32) for n, v in zip(names, values)}


def decode_outputs(adapter, outs: dict[str, np.ndarray], width: int) -> np.ndarray:
    """x[batch, lane, row] from the named outputs: a one-output adapter decodes its array, a multi-output one the dict."""
    names = output_names(adapter)
    return adapter.decode(outs[names[0]] if len(names) == 1 else {n: outs[n] for n in names}, width)
