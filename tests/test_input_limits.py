"""Input limits checked before any byte is hashed or allocated, and the bad inputs that used to end in
"internal error": each answered with one line naming the file and the field."""
from __future__ import annotations

import errno
import json
import struct
import zlib

import numpy as np
import pytest

from parity.errors import CaseError, CheckpointError, UsageError

from .conftest import run_main


def _edit(case_dir, edit):
    meta = json.loads((case_dir / "case.json").read_text())
    edit(meta)
    (case_dir / "case.json").write_text(json.dumps(meta))
    return meta


def _problems(case_dir) -> list[str]:
    from parity.cases.format import load_case

    with pytest.raises(CaseError) as e:
        load_case(case_dir)
    return e.value.problems


def test_a_huge_frame_size_is_refused_before_any_frame_is_read(case_copy, monkeypatch):
    from parity.cases import format as F

    _edit(case_copy, lambda m: m["image"].update(width=100000, height=100000))
    read = []
    monkeypatch.setattr(F, "_image_size_problems", lambda *a: read.append(a) or [])
    (p,) = _problems(case_copy)
    assert "case.json: image: 100000x100000 is 10000000000 pixels, more than the cap of 67108864" in p and "--max-frame-pixels" in p
    assert not read  # nothing was opened
    monkeypatch.setenv("PARITY_MAX_FRAME_PIXELS", str(100000 * 100000))
    assert any("frame is" in q or "bytes, expected" in q for q in _problems(case_copy))  # past the cap: the frames are checked
    r = run_main("--max-frame-pixels", "1000", "cases", "validate", case_copy)
    assert r.returncode != 0 and "more than the cap of 1000" in (r.stdout + r.stderr)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_named_from_its_header(case_copy, tmp_path):
    from parity.cases.importers import _image_size

    meta = json.loads((case_copy / "case.json").read_text())
    jpeg = case_copy / meta["frames"][0]["jpeg"]
    jpeg.write_bytes(_png_header(100000, 100000))  # a header claiming 10^10 pixels, 60 bytes on disk
    assert any(f"{jpeg}: decompression bomb (frames[0])" in p for p in _problems(case_copy))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100000, 100000))
    with pytest.raises(CaseError, match="decompression bomb"):
        _image_size(bomb)


def test_npy_headers_are_checked_against_the_case_before_loading(case_copy):
    from numpy.lib import format as npf

    meta = json.loads((case_copy / "case.json").read_text())
    gt = case_copy / meta["lanes"]["file"]
    want = np.load(gt).shape
    with open(gt, "wb") as f:  # a header claiming 268 GiB
        npf.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1 << 16, 1 << 12, 1 << 8)})
    assert any(f"{gt}: GT must be float" in p and "(65536, 4096, 256)" in p for p in _problems(case_copy))
    with open(gt, "wb") as f:  # the right shape, but the data is not there
        npf.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": want})
        f.write(b"\0" * 16)
    assert any(f"{gt}: holds" in p and "its header promises" in p for p in _problems(case_copy))


@pytest.mark.parametrize("t, msg", [
    (10**400, "timestamp has 401 digits"),
    (1e308, "beyond 1e+10 s"),
    (1.7e18, "not ns or us"),
])
def test_implausible_timestamps_are_named(case_copy, t, msg):
    meta = json.loads((case_copy / "case.json").read_text())
    meta["frames"][1]["t"] = t
    (case_copy / "case.json").write_text(json.dumps(meta))
    assert any("frames[1].t" in p and msg in p for p in _problems(case_copy))


def test_an_integer_too_long_for_json_is_a_case_error(case_copy):
    text = (case_copy / "case.json").read_text().replace('"fps": ', '"fps": ' + "9" * 5000 + ", \"x\": ", 1)
    (case_copy / "case.json").write_text(text)
    (p,) = _problems(case_copy)
    assert "case.json: not a usable case.json" in p


def test_an_error_flood_is_summarised(case_copy):
    meta = json.loads((case_copy / "case.json").read_text())
    frame = meta["frames"][0]
    meta["frames"] = [{"t": i / 10, **{s: f"gone/{i:06d}{frame[s][-5:]}" for s in meta["streams"]}} for i in range(5000)]
    meta.pop("lanes")
    (case_copy / "case.json").write_text(json.dumps(meta))
    problems = _problems(case_copy)
    assert len(problems) <= 21
    flood = next(p for p in problems if "frame file(s) missing" in p)
    assert flood.startswith(f"{len(meta['streams']) * 5000} frame file(s) missing: ") and "... and" in flood and "more" in flood
    r = run_main("cases", "validate", case_copy)
    assert len((r.stdout + r.stderr).splitlines()) < 30


def test_rank_n_boot_below_100_is_refused(tmp_path):
    for n in ("-5", "0", "99"):
        r = run_main("rank", "--checkpoints", "checkpoints/reference.pt", "--cases", tmp_path, "--n-boot", n)
        assert r.returncode == 2 and f"--n-boot {n}: at least 100" in r.stderr


def test_a_unit_file_that_is_not_a_record_is_recomputed(tmp_path):
    from parity.runs.units import UnitCache

    cache = UnitCache(tmp_path)
    cache.path("ab" * 16).parent.mkdir(parents=True)
    cache.path("ab" * 16).write_text("[]")
    assert cache.get("ab" * 16) is None


def test_gate_as_collisions_are_refused():
    from parity.decisions.gate import parse_rename

    with pytest.raises(UsageError, match="already compared as 'ort-fp16'"):
        parse_rename(["trt-a=ort-fp16", "trt-b=ort-fp16"])
    with pytest.raises(UsageError, match="already compared as"):
        parse_rename(["trt=ort-fp16", "trt=ort-fp32"])


def test_a_candidate_runner_renamed_onto_one_it_has_is_refused():
    from parity.decisions.baseline import RunView
    from parity.decisions.gate import compare, load_rules

    entries = {("c", r, "vehicle"): {"frames": 10} for r in ("torch", "ort-fp16", "trt-fp16")}
    view = RunView("x", entries, {"c": {"sha256": "s", "frames": 10, "labelled_frames": 10}}, {}, {})
    with pytest.raises(UsageError, match="would both be compared as ort-fp16/vehicle"):
        compare(view, view, load_rules(None), {"trt-fp16": "ort-fp16"})


def test_an_unknown_sidecar_config_key_is_named(random_checkpoint, tmp_path):
    import shutil

    from parity.models.checkpoint import load_checkpoint

    pt = tmp_path / "m.pt"
    shutil.copy(random_checkpoint.path, pt)
    meta = dict(random_checkpoint.meta, config={**random_checkpoint.meta["config"], "gridding": 200})
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"m.json: config.gridding: not a setting of the rowanchor adapter"):
        load_checkpoint(pt).adapter()


def test_score_refuses_repeated_h_samples(tmp_path):
    from parity.metrics.external import read_tusimple_predictions

    p = tmp_path / "pred.json"
    p.write_text(json.dumps({"raw_file": "a.jpg", "lanes": [[1, 2, 3]], "h_samples": [10, 10, 20]}) + "\n")
    with pytest.raises(UsageError, match=r"pred.json:1: .*h_samples repeats a row"):
        read_tusimple_predictions(p)
    p.write_text('{"raw_file": "a.jpg", "lanes": [[1]], "h_samples": [1e999]}\n'.replace("1e999", "1" + "0" * 400))
    with pytest.raises(UsageError, match="pred.json:1"):
        read_tusimple_predictions(p)


def test_a_malformed_manifest_is_one_line(tmp_path):
    from parity.runs.folder import MANIFEST, SCHEMA, RunFolder

    (tmp_path / "o").mkdir()
    (tmp_path / "o" / MANIFEST).write_text(json.dumps({"schema": SCHEMA, "kind": "replay", "run_key": "k", "parts": []}))
    with pytest.raises(UsageError, match="manifest.json is malformed .parts must map"):
        with RunFolder(tmp_path / "o", "replay", "k"):
            pass


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    from pathlib import Path

    from parity import atomic

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write into an open file names no file

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as e:
        atomic.write_json(tmp_path / "summary.json", {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "summary.json")
    assert f"cannot write {tmp_path / 'summary.json'}" in str(e.value)
    assert not list(tmp_path.iterdir())  # no temporary file left behind
