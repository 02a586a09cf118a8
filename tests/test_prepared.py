"""The prepared-input cache: a case x condition's model inputs kept for the next checkpoint, equal bit
for bit to a fresh prepare, never trusted by their file name, bounded on disk."""
from __future__ import annotations

import numpy as np
import pytest

from parity.preprocessing import perturb
from parity.preprocessing.pipeline import Pipeline, training_pipeline, vehicle_pipeline
from parity.runs import units as U
from parity.runs.prepared import PreparedInputs
from .test_rank import _perturbed, _rank, _twin, six_cases  # noqa: F401  (the fixture)


def _prepare(case, pipe, name, severity=3):
    from parity.cases.format import load_case

    pert = perturb.get(name) if name else None
    return U.prepare_condition(load_case(case), np.arange(1, 7), pipe, pert, severity, 0, 4)


def _same(a, b):
    assert len(a[0]) == len(b[0])
    for x, y in zip(a[0], b[0]):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])


@pytest.mark.parametrize("name", [None, "jpeg", "shot_noise", "resize_kernel", "frame_drop", "fp16_input_cast"])
def test_read_back_equals_a_fresh_prepare_bit_for_bit(six_cases, tmp_path, name):  # noqa: F811
    store = PreparedInputs(tmp_path)
    nhwc_fp16 = Pipeline.from_dict({**training_pipeline().to_dict(), "name": "nhwc", "layout": "NHWC", "dtype": "float16"})
    for pipe in (vehicle_pipeline(), training_pipeline(), nhwc_fp16):
        fresh = _prepare(six_cases[0], pipe, name)
        store.put(f"{pipe.name}-{name}", pipe, *fresh)
        _same(store.get(f"{pipe.name}-{name}", pipe), fresh)
    # 8-bit levels where they give the inputs back exactly (a quarter of float32), the inputs themselves otherwise
    levels = store.path(f"vehicle-{name}").stat().st_size < fresh[0][0].nbytes * len(fresh[0])
    assert levels == (name != "fp16_input_cast")


def test_an_entry_is_used_only_under_its_own_key_and_digest(six_cases, tmp_path):  # noqa: F811
    store, pipe = PreparedInputs(tmp_path), vehicle_pipeline()
    store.put("a" * 32, pipe, *_prepare(six_cases[0], pipe, None))
    store.put("b" * 32, pipe, *_prepare(six_cases[1], pipe, None))
    other = store.path("b" * 32).read_bytes()
    store.path("a" * 32).write_bytes(other)  # another condition's file under this name
    assert store.get("a" * 32, pipe) is None
    raw = bytearray(other)
    raw[-100] ^= 1  # one flipped bit of the payload
    store.path("b" * 32).write_bytes(bytes(raw))
    assert store.get("b" * 32, pipe) is None
    store.path("b" * 32).write_bytes(other[: len(other) // 2])  # truncated
    assert store.get("b" * 32, pipe) is None
    assert (store.hits, store.misses) == (0, 3)


def test_the_folder_keeps_the_most_recently_used_within_its_budget(six_cases, tmp_path):  # noqa: F811
    pipe = vehicle_pipeline()
    fresh = _prepare(six_cases[0], pipe, None)
    store = PreparedInputs(tmp_path)
    store.put("k0", pipe, *fresh)
    size = store.path("k0").stat().st_size
    store.max_bytes = int(2.5 * size)
    store.put("k1", pipe, *fresh)
    import os

    os.utime(store.path("k0"), (1, 1))  # used longest ago
    os.utime(store.path("k1"), (2, 2))
    assert store.get("k0", pipe) is not None  # a hit makes it the most recent
    store.put("k2", pipe, *fresh)
    assert store.path("k0").exists() and store.path("k2").exists() and not store.path("k1").exists()
    assert PreparedInputs(tmp_path, max_bytes=0).get("k9", pipe) is None


def test_an_added_checkpoint_reads_every_condition_and_scores_as_if_it_prepared_them(six_cases, random_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    import pandas as pd

    calls = []
    real = U.prepare_condition
    monkeypatch.setattr(U, "prepare_condition", lambda *a, **k: calls.append(a[0].name) or real(*a, **k))
    folder = tmp_path / "ckpts"
    _twin(random_checkpoint, folder, "erm")
    cases = [str(p) for p in six_cases[:3]]
    assert _rank(["--checkpoints", str(folder / "*.pt"), "--cases", *cases], tmp_path / "r1", tmp_path / "cache").returncode == 0
    conditions = 3 * 3  # cases x (2 unperturbed pipelines + crop_shift_y 5)
    assert len(calls) == conditions
    new = _perturbed(random_checkpoint, folder, "noisy", 0.05)
    r2 = _rank(["--checkpoints", str(folder / "*.pt"), "--cases", *cases], tmp_path / "r2", tmp_path / "cache")
    assert r2.returncode == 0 and len(calls) == conditions  # nothing prepared again
    monkeypatch.setenv("PARITY_PREPARED_CACHE_GB", "0")
    r3 = _rank(["--checkpoints", str(new), "--cases", *cases], tmp_path / "r3", tmp_path / "fresh-cache")
    assert r3.returncode == 0 and len(calls) == 2 * conditions and not (tmp_path / "fresh-cache" / "prepared").exists()
    cols = ["case", "runner", "pipeline", "perturbation", "severity"]
    got = pd.read_parquet(tmp_path / "r2" / "units.parquet").query("checkpoint == 'noisy'").sort_values(cols).reset_index(drop=True)
    ref = pd.read_parquet(tmp_path / "r3" / "units.parquet").sort_values(cols).reset_index(drop=True)
    metrics = [c for c in ref.columns if c.endswith("__sum") or c.endswith("__n")]
    pd.testing.assert_frame_equal(got[cols + metrics], ref[cols + metrics])
