"""Atomic writes: whole files or none, and readable by a team as any new file is."""
from __future__ import annotations

import os
import stat

import pytest

from parity import atomic


def test_atomic_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        atomic.write_bytes(tmp_path / "b.bin", b"\0")
    finally:
        os.umask(old)
    for name in ("a.json", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_nan_is_written_as_null(tmp_path):
    atomic.write_json(tmp_path / "n.json", {"a": float("nan"), "b": [float("inf"), 1.0]})
    assert (tmp_path / "n.json").read_text().replace(" ", "").replace("\n", "") == '{"a":null,"b":[null,1.0]}'
