"""Named sets of synthetic cases: the bundled default replay suite and the reference model's training set.

Suites are recipes (scenario + seed), not data: `generate_suite` renders them on first use, and
the seeds of the default suite never occur in the training set, so it is held out.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .case import CASE_FILE, load_case
from .errors import UsageError
from .synth import Scenario, write_case


def default_suite() -> list[Scenario]:
    return [
        Scenario("straight_day", seed=1001, frames=120, tags=("day", "straight")),
        Scenario("curve_left", seed=1002, frames=120, k0=-1 / 350, lanes_total=4, ego_lane=2, tags=("day", "curve")),
        Scenario(
            "s_curve_weave", seed=1003, frames=120, ka=1 / 300, period_m=420, drift_amp_m=0.5,
            drift_period_s=3.5, tags=("day", "s-curve", "weave"),
        ),
        Scenario(
            "dusk_shadows", seed=1004, frames=120, k0=1 / 600, light=0.6, tint=(1.08, 0.95, 0.85),
            shadows=True, noise_sigma=3.5, lanes_total=2, ego_lane=0, tags=("dusk", "shadows"),
        ),
    ]


def train_suite(n_cases: int = 48, frames: int = 25) -> list[Scenario]:
    # 5 fps spreads each case's frames over 5 s of driving: more variety per rendered frame.
    return [Scenario.sample(f"train_{i:03d}", seed=i, frames=frames, fps=5.0) for i in range(n_cases)]


SUITES = {"default": (default_suite, ("nv12", "jpeg")), "train": (train_suite, ("jpeg",))}


def generate_suite(name: str, out: str | Path, force: bool = False, progress: bool = True) -> list[Path]:
    """Render every case of suite `name` under `out`; cases already complete are kept."""
    if name not in SUITES:
        raise UsageError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    make, streams = SUITES[name]
    out = Path(out)
    paths = []
    scenarios = make()
    try:
        from tqdm import tqdm

        it = tqdm(scenarios, desc=f"suite {name}", unit="case", disable=None if progress else True)
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        it = scenarios
    for scn in it:
        root = out / scn.name
        if (root / CASE_FILE).is_file() and not force:
            paths.append(root)
            continue
        if root.exists():
            shutil.rmtree(root)
        paths.append(write_case(scn, root, streams=streams))
    for p in paths:
        load_case(p)  # a generated suite must validate
    return paths
