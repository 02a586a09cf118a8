"""Named synthetic scenarios and suites: the bundled default replay suite and the training set.

Suites are recipes (scenario + seed), not data: `generate_suite` renders them on first use. The
default suite's seeds never occur in the training set, so it is held out.
"""
from __future__ import annotations

import difflib
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from .format import CASE_FILE, load_case
from .synth import Camera, Scenario, Vehicle, write_case

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("straight_day", seed=1001, frames=120, fps=20.0, tags=("day", "straight")),
        Scenario(
            "curve_left", seed=1002, frames=120, fps=20.0, lanes=4, start_lane=2,
            curvature=((0.0, 0.0), (60.0, -1 / 350)), tags=("day", "curve", "clothoid"),
        ),
        Scenario(
            "s_curve_dusk", seed=1003, frames=120, fps=15.0, ka=1 / 300, period_m=420, drift_amp_m=0.45,
            drift_period_s=3.5, lighting="dusk", light=0.6, tint=(1.08, 0.95, 0.85), shadows=True,
            noise_sigma=3.0, tags=("dusk", "s-curve", "shadows"),
        ),
        Scenario(
            "lane_change", seed=1004, frames=120, fps=20.0, lanes=3, start_lane=0, lane_changes=((1.0, 1),),
            lane_change_s=4.0, drift_amp_m=0.1, curvature=((0.0, 1 / 900),), tags=("day", "lane-change"),
        ),
        Scenario(
            "night", seed=1005, frames=120, fps=20.0, lighting="night", light=0.9, noise_sigma=3.0,
            curvature=((0.0, 1 / 700),), markings=("solid", "dashed", "double", "solid"), tags=("night",),
        ),
        Scenario(
            "tunnel_exit", seed=1006, frames=120, fps=20.0, speed_mps=20.0, lighting="tunnel_exit",
            tunnel_exit_s=40.0, lanes=2, start_lane=0, tags=("tunnel", "exposure"),
        ),
        Scenario(
            "worn_markings", seed=1007, frames=120, fps=10.0, wear=0.55, missing_dashes=0.3, asphalt=0.42,
            width_var_m=0.2, camera=Camera(roll_deg=0.8), tags=("day", "worn-paint", "roll"),
        ),
        Scenario(
            "occlusion_traffic", seed=1008, frames=120, fps=30.0, speed_mps=15.0, lanes=3, start_lane=1,
            vehicles=(Vehicle(1, 14.0, 0.5), Vehicle(2, 9.0, 1.5, (0.55, 0.55, 0.6)), Vehicle(0, 25.0, -2.0, (0.5, 0.1, 0.1))),
            tags=("day", "occlusion", "traffic"),
        ),
        Scenario(
            "rain_merge", seed=1009, frames=120, fps=20.0, lanes=3, start_lane=1, rain=0.6, merge=(20.0, 140.0),
            noise_sigma=2.5, tags=("rain", "merge"),
        ),
    )
}


def default_suite() -> list[Scenario]:
    return list(SCENARIOS.values())


def train_suite(n_cases: int = 48, frames: int = 25) -> list[Scenario]:
    # 5 fps spreads each case's frames over 5 s of driving: more variety per rendered frame.
    return [Scenario.sample(f"train_{i:03d}", seed=i, frames=frames, fps=5.0) for i in range(n_cases)]


def validation_suite(n_cases: int = 12, frames: int = 25) -> list[Scenario]:
    """Where recipes make their choices (WiSE-FT's alpha, a greedy soup's ingredients): sampled like the
    training suite from seeds 5000.. (the training suite uses 0..47, the default suite 1001..1009),
    so no choice is made on the cases a rank evaluates."""
    return [Scenario.sample(f"val_{i:03d}", seed=5000 + i, frames=frames, fps=5.0) for i in range(n_cases)]


def unlabelled_suite(n_cases: int = 96, frames: int = 25) -> list[Scenario]:
    """What UAT learns from: twice the training suite's cases, sampled from seeds 20000.., written without GT."""
    return [Scenario.sample(f"unl_{i:03d}", seed=20000 + i, frames=frames, fps=5.0) for i in range(n_cases)]


SUITES = {"default": (default_suite, ("nv12", "jpeg")), "train": (train_suite, ("jpeg",)), "validation": (validation_suite, ("jpeg",)),
          "unlabelled": (unlabelled_suite, ("jpeg",))}
UNLABELLED = {"unlabelled"}  # suites written without GT


def scenario(name: str, seed: int | None = None, frames: int | None = None) -> Scenario:
    """A named scenario, optionally with another seed (noise, texture, wear) or length."""
    if name not in SCENARIOS:
        close = difflib.get_close_matches(name, SCENARIOS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown scenario {name!r}{hint} (known: {', '.join(SCENARIOS)})")
    scn = SCENARIOS[name]
    changes = {k: v for k, v in (("seed", seed), ("frames", frames)) if v is not None}
    return replace(scn, **changes) if changes else scn


def generate_suite(name: str, out: str | Path, force: bool = False, progress: bool = True) -> list[Path]:
    """Render every case of suite `name` under `out`; cases already complete are kept."""
    if name not in SUITES:
        raise UsageError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    make, streams = SUITES[name]
    out = Path(out)
    scenarios = make()
    todo = [s for s in scenarios if force or not (out / s.name / CASE_FILE).is_file()]
    from ..progress import progress as progress_bar

    # Cases are independent and deterministic: render them in parallel, one process per core.
    workers = min(len(todo), os.cpu_count() or 1)
    with progress_bar(len(todo), f"suite {name}", "case", progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_render_case, todo, [out] * len(todo), [streams] * len(todo), [name not in UNLABELLED] * len(todo)):
                    bar.update(1)
        else:
            for scn in todo:
                _render_case(scn, out, streams, name not in UNLABELLED)
                bar.update(1)
    paths = [out / s.name for s in scenarios]
    for p in paths:
        load_case(p)  # a generated suite must validate
    return paths


def _render_case(scn: Scenario, out: Path, streams, labels: bool = True) -> Path:
    root = out / scn.name
    if root.exists():
        shutil.rmtree(root)
    return write_case(scn, root, streams=streams, labels=labels)
