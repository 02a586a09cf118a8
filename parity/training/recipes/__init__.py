"""Training recipes: each a short module that composes the loop's hooks and registers its name.

`parity methods list` prints the registry; `parity train --method NAME [--from CKPT] [--set k=v]`
runs one. A recipe declares its hyper-parameters with defaults (overridden by `--set`), the paper
it follows, and whether it fine-tunes a trained model (`--from`). docs/methods.md explains each.

Recipes may import the training loop (`parity.training.loop`), the shared top-level modules and the
stages below training (`parity.models`, `parity.preprocessing`, `parity.metrics`, ...).
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Callable

from ...errors import UsageError

MODULES = ("erm", "fgsm", "averaging", "swalp", "wise_ft", "regmixup", "reinit", "l2sp", "fp16_aware", "rotation_ssl", "uat", "soups", "perturb_aug")


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    source: str  # the paper or document it follows
    build: Callable  # hp -> Hooks
    defaults: dict = field(default_factory=dict)
    needs_parent: bool = False

    def resolve(self, settings: dict) -> dict:
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise UsageError(f"method {self.name!r} has no setting {unknown[0]!r} (it has: {', '.join(self.defaults) or 'none'})")
        out = dict(self.defaults)
        for k, v in settings.items():
            want = type(self.defaults[k])
            try:
                out[k] = _parse(v, want)
            except (TypeError, ValueError):
                raise UsageError(f"method {self.name!r}: setting {k}={v!r} is not a {want.__name__}") from None
        return out


def _parse(v, want):
    if not isinstance(v, str):
        return want(v)
    if want is bool:
        if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(v)
        return v.lower() in ("true", "1", "yes")
    if want is tuple:
        return tuple(float(x) for x in v.split(",") if x.strip())
    return want(v)


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} registered twice")
    RECIPES[recipe.name] = recipe
    return recipe


def _load() -> None:
    for m in MODULES:
        importlib.import_module(f"{__name__}.{m}")


def get_recipe(name: str) -> Recipe:
    _load()  # every module, even when one was imported on its own first (importing twice registers once)
    if name not in RECIPES:
        close = difflib.get_close_matches(name, RECIPES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown method {name!r}{hint} (known: {', '.join(RECIPES)})")
    return RECIPES[name]


def all_recipes() -> dict[str, Recipe]:
    _load()
    return dict(RECIPES)
