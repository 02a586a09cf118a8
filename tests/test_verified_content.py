"""Nothing read back is trusted by its name. Run parts:  another run's part copied in, two parts swapped, a
manifest path leaving the folder and a truncated part are each said in one line and recomputed by
the same command; a final table changed after the run finished is named by its readers and rebuilt
by the same command. The artifact cache: a truncated or replaced cached ONNX, or a missing
meta.json, is rebuilt with one line. Each of these passed silently (or crashed) before."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from parity.cli import main
from parity.runs.folder import MANIFEST, MARKER

from .conftest import _tiny_scenario, assert_same_run_tables, run_main


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    from parity.cases.synth import write_case

    root = tmp_path_factory.mktemp("parts-cases")
    return [write_case(_tiny_scenario(f"p{i}", seed=80 + i, frames=8), root / f"p{i}") for i in range(2)]


def _args(cases, ckpt, out, cache):
    return ["replay", "--cases", *map(str, cases), "--checkpoint", str(ckpt.path), "--runners", "torch", "--pipeline", "vehicle",
            "--out", str(out), "--cache-dir", str(cache), "--no-progress", "--no-report"]


@pytest.fixture(scope="module")
def clean_run(two_cases, random_checkpoint, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("parts") / "clean"
    assert main(_args(two_cases, random_checkpoint, out, cache_dir)) == 0
    return out


def _copy_run(clean_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    return out


def _part(out, case, suffix=".parquet"):
    entry = json.loads((out / MANIFEST).read_text())["parts"][case]
    return out / "parts" / entry["files"][suffix]


def _again(two_cases, ckpt, out, cache):
    r = run_main(*_args(two_cases, ckpt, out, cache))
    assert r.returncode == 0, r.stderr
    return r


def test_another_runs_part_copied_in_is_recomputed_not_merged(two_cases, random_checkpoint, cache_dir, clean_run, tmp_path, caplog):
    import torch

    from parity.models.checkpoint import save_checkpoint

    model = random_checkpoint.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    other_ck = save_checkpoint(tmp_path / "other.pt", model, dict(random_checkpoint.meta))
    other = tmp_path / "other"
    assert main(_args(two_cases, other_ck, other, cache_dir)) == 0
    out = _copy_run(clean_run, tmp_path)
    shutil.copy(_part(other, "p0"), _part(out, "p0"))
    _again(two_cases, random_checkpoint, out, cache_dir)
    assert "part of p0 is not the file this run wrote" in caplog.text
    assert_same_run_tables(out, clean_run)
    assert set(pd.read_parquet(out / "frames.parquet").checkpoint) == {random_checkpoint.name}


def test_swapped_parts_and_a_manifest_path_outside_parts_are_recomputed(two_cases, random_checkpoint, cache_dir, clean_run, tmp_path, caplog):
    out = _copy_run(clean_run, tmp_path)
    a, b = _part(out, "p0"), _part(out, "p1")
    tmp = a.with_suffix(".tmp")
    a.rename(tmp), b.rename(a), tmp.rename(b)
    _again(two_cases, random_checkpoint, out, cache_dir)
    assert set(pd.read_parquet(out / "frames.parquet").case) == {"p0", "p1"}
    assert_same_run_tables(out, clean_run)

    outside = tmp_path / "elsewhere.parquet"
    shutil.copy(_part(out, "p1"), outside)
    doc = json.loads((out / MANIFEST).read_text())
    doc["parts"]["p1"]["files"][".parquet"] = str(outside)  # an absolute path: never read
    (out / MANIFEST).write_text(json.dumps(doc))
    caplog.clear()
    _again(two_cases, random_checkpoint, out, cache_dir)
    assert "not a file of parts/" in caplog.text
    assert_same_run_tables(out, clean_run)


def test_a_truncated_part_of_a_finished_run_is_repaired_by_the_same_command(two_cases, random_checkpoint, cache_dir, clean_run, tmp_path, caplog):
    out = _copy_run(clean_run, tmp_path)
    p = _part(out, "p1", ".jitter.parquet")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    r = _again(two_cases, random_checkpoint, out, cache_dir)
    assert "part of p1 is not the file this run wrote" in caplog.text
    assert not (out / MARKER).exists() and json.loads((out / "summary.json").read_text())["reused_cases"] == ["p0"]
    assert_same_run_tables(out, clean_run)
    assert "Traceback" not in r.stderr


def test_a_final_table_changed_after_the_run_is_named_by_readers_and_rebuilt(two_cases, random_checkpoint, cache_dir, clean_run, tmp_path):
    out = _copy_run(clean_run, tmp_path)
    frames = pd.read_parquet(out / "frames.parquet")
    frames.loc[frames.index[0], "frame_accuracy"] = 0.123
    frames.to_parquet(out / "frames.parquet")
    r = run_main("baseline", "--run", out, "--out", tmp_path / "b.json")
    assert r.returncode == 2 and f"{out / 'frames.parquet'}: changed since its run finished" in r.stderr
    _again(two_cases, random_checkpoint, out, cache_dir)
    assert_same_run_tables(out, clean_run)
    assert run_main("baseline", "--run", out, "--out", tmp_path / "b.json").returncode == 0


def test_parts_carry_their_unit_key_and_page_checksums(clean_run):
    import pyarrow.parquet as pq

    from parity.runs.folder import PART_METADATA

    entry = json.loads((clean_run / MANIFEST).read_text())["parts"]["p0"]
    for suffix, name in entry["files"].items():
        meta = json.loads(pq.read_schema(clean_run / "parts" / name).metadata[PART_METADATA])
        assert meta == {"unit": "p0", "key": entry["key"]}
        assert len(entry["sha256"][suffix]) == 64
    # merged tables do not carry any one part's identity
    assert PART_METADATA not in (pq.read_schema(clean_run / "frames.parquet").metadata or {})


# ---- the artifact cache ---------------------------------------------------------------------------

def _fresh_process(monkeypatch):
    from parity.runners import artifacts

    monkeypatch.setattr(artifacts, "_VERIFIED", {})


def test_a_truncated_or_replaced_cached_onnx_and_a_missing_meta_are_rebuilt(random_checkpoint, tmp_path, monkeypatch, caplog):
    import torch

    from parity.models.checkpoint import save_checkpoint
    from parity.provenance import sha256_file
    from parity.runners.artifacts import ArtifactCache, export_onnx

    cache = ArtifactCache(tmp_path / "cache")
    path, meta = export_onnx(random_checkpoint, cache)
    good = sha256_file(path)
    assert cache.builds == 1 and meta["sha256"] == good

    path.write_bytes(path.read_bytes()[:1000])  # truncated, seen by a later process
    _fresh_process(monkeypatch)
    again = ArtifactCache(tmp_path / "cache")
    path2, _ = export_onnx(random_checkpoint, again)
    assert again.builds == 1 and sha256_file(path2) == good and "sha256 differs from meta.json's" in caplog.text

    model = random_checkpoint.build_model()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    other, _ = export_onnx(save_checkpoint(tmp_path / "other.pt", model, dict(random_checkpoint.meta)), again)
    shutil.copy(other, path2)  # another model's valid ONNX in its place, within the same process
    caplog.clear()
    path3, _ = export_onnx(random_checkpoint, again)
    assert sha256_file(path3) == good and "rebuilt" in caplog.text and again.builds == 3

    (path3.parent / "meta.json").unlink()
    caplog.clear()
    path4, meta4 = export_onnx(random_checkpoint, again)
    assert "has no meta.json: rebuilt" in caplog.text and meta4["sha256"] == sha256_file(path4)


def test_the_sha256_is_checked_once_per_process_then_size_and_mtime(random_checkpoint, tmp_path, monkeypatch):
    from parity.runners import artifacts

    cache = artifacts.ArtifactCache(tmp_path / "cache")
    artifacts.export_onnx(random_checkpoint, cache)
    _fresh_process(monkeypatch)
    calls = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        artifacts.export_onnx(random_checkpoint, cache)
    assert len(calls) == 1 and cache.builds == 1
