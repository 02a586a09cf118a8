"""A serial replay prepares the next case's first batches on a second thread while it scores a case
(parity/runs/ahead.py): the batches are the ones the unit would prepare, the tables are unchanged,
what is held is bounded, and a preparation that fails is left to the unit."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from .conftest import _tiny_scenario, assert_same_run_tables, run_main


@pytest.fixture(scope="module")
def three_cases(tmp_path_factory):
    from parity.cases.synth import write_case

    root = tmp_path_factory.mktemp("ahead-cases")
    return [write_case(_tiny_scenario(f"a{i}", seed=90 + i, frames=8), root / f"a{i}") for i in range(3)]


def _replay(cases, ckpt, out, cache, threads="2"):
    return run_main("replay", "--cases", *map(str, cases), "--checkpoint", ckpt.path, "--runners", "torch,ort-fp16",
                    "--pipeline", "vehicle,training", "--batch-size", "4", "--threads", threads, "--cache-dir", cache,
                    "--no-progress", "--no-report", "--out", out)


@pytest.fixture
def prepared_where(monkeypatch):
    """(thread name, case, first frame, pipeline) of every batch prepared, in order."""
    from parity.preprocessing.pipeline import Pipeline

    seen, prepare = [], Pipeline.prepare

    def spy(self, case, indices, *a, **k):
        seen.append((threading.current_thread().name.split("_")[0], case.name, int(indices[0]), self.name))
        return prepare(self, case, indices, *a, **k)

    monkeypatch.setattr(Pipeline, "prepare", spy)
    return seen


def test_each_cases_first_batches_are_prepared_on_the_second_thread_and_the_tables_do_not_change(
        three_cases, random_checkpoint, cache_dir, tmp_path, monkeypatch, prepared_where):
    from parity.runs import ahead

    monkeypatch.setattr(ahead, "AHEAD_BYTES", 1 << 30)
    assert (r := _replay(three_cases, random_checkpoint, tmp_path / "ahead", cache_dir)).returncode == 0, r.stderr
    # 8 frames in batches of 4 on two pipelines: the first case's four batches inline, all four of each later case
    # while the case before it is scored
    assert sorted(prepared_where) == sorted((where, c.name, s, p) for where, c in zip(("MainThread", "parity-ahead", "parity-ahead"), three_cases)
                                            for s in (0, 4) for p in ("vehicle", "training"))
    prepared_where.clear()
    monkeypatch.setattr(ahead, "start", lambda payload: None)
    assert (r := _replay(three_cases, random_checkpoint, tmp_path / "inline", cache_dir)).returncode == 0, r.stderr
    assert {w for w, *_ in prepared_where} == {"MainThread"}
    assert_same_run_tables(tmp_path / "ahead", tmp_path / "inline")


def test_what_is_held_ahead_is_bounded_and_one_compute_thread_prepares_nothing_ahead(
        three_cases, random_checkpoint, cache_dir, tmp_path, monkeypatch, prepared_where):
    from parity.runs import ahead

    monkeypatch.setattr(ahead, "AHEAD_BYTES", 1)  # the first batch passes it
    assert (r := _replay(three_cases, random_checkpoint, tmp_path / "bounded", cache_dir)).returncode == 0, r.stderr
    assert sorted(t[1:] for t in prepared_where if t[0] == "parity-ahead") == [(c.name, 0, "vehicle") for c in three_cases[1:]]
    assert len(prepared_where) == 3 * 4  # the rest inline, each batch once
    prepared_where.clear()
    assert (r := _replay(three_cases, random_checkpoint, tmp_path / "one-thread", cache_dir, threads="1")).returncode == 0, r.stderr
    assert {w for w, *_ in prepared_where} == {"MainThread"}


def test_a_preparation_that_fails_is_left_to_the_unit(three_cases, monkeypatch):
    """A case whose files changed since the run hashed them: nothing is prepared ahead and nothing is
    raised on the thread; the unit loads the case itself and reports it (runs.inputs.unit_case)."""
    from parity.cases.format import load_case
    from parity.models.rowanchor import RowAnchorAdapter
    from parity.runners.base import set_compute_threads
    from parity.runs import ahead

    set_compute_threads(2)
    try:
        case = load_case(three_cases[0])
        pipe = RowAnchorAdapter().pipelines()["vehicle"]
        payload = {"case": str(three_cases[0]), "case_sha256": case.content_hash(), "pipelines": [pipe.to_dict()], "batch_size": 4}
        ahead.start({**payload, "case_sha256": "0" * 64})
        ahead.start(payload)
        assert ahead.take(str(three_cases[0]), "0" * 64) == {}
        ahead.start(payload)
        got = ahead.take(str(three_cases[0]), case.content_hash())
        key = ahead.pipeline_key(pipe.to_dict())
        assert sorted(got) == [(key, 0, 4), (key, 4, 8)]
        for (_, s, e), x in got.items():
            np.testing.assert_array_equal(x, pipe.prepare(case, np.arange(s, e)))
    finally:
        set_compute_threads(None)

