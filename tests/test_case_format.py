import json

import numpy as np
import pytest

from parity.case import load_case
from parity.errors import CaseError

from .conftest import run_cli


def _edit(case, fn):
    p = case / "case.json"
    meta = json.loads(p.read_text())
    fn(meta)
    p.write_text(json.dumps(meta))


def _problems(case):
    with pytest.raises(CaseError) as ei:
        load_case(case)
    return ei.value.problems


def test_corrupt_json_names_file_and_position(case_copy):
    (case_copy / "case.json").write_text('{"schema_version": 1, "name": ')
    (msg,) = _problems(case_copy)
    assert str(case_copy / "case.json") in msg and "invalid JSON" in msg and "line 1" in msg


def test_missing_frame_names_the_file(case_copy):
    (case_copy / "frames" / "000003.nv12").unlink()
    (msg,) = _problems(case_copy)
    assert "000003.nv12" in msg and "missing frame file" in msg


def test_every_problem_reported_together(case_copy):
    def breakit(meta):
        meta["frames"][2]["t"] = meta["frames"][1]["t"]
        meta["frames"][4]["jpeg"] = "../../etc/passwd"
        meta["lanes"]["anchor_rows"][0] = 9999

    _edit(case_copy, breakit)
    (case_copy / "frames" / "000000.nv12").write_bytes(b"short")
    msgs = "\n".join(_problems(case_copy))
    assert "frames[2].t: timestamps must increase" in msgs
    assert "frames[4].jpeg: path '../../etc/passwd' escapes the case folder" in msgs
    assert "lanes.anchor_rows" in msgs
    assert "000000.nv12: 5 bytes, expected 345600" in msgs


def test_unknown_schema_version(case_copy):
    _edit(case_copy, lambda m: m.update(schema_version=99))
    (msg,) = _problems(case_copy)
    assert "schema_version" in msg and "99" in msg


def test_gt_shape_checked(case_copy):
    np.save(case_copy / "lanes.npy", np.zeros((2, 4, 18), dtype=np.float32))
    (msg,) = _problems(case_copy)
    assert "lanes.npy" in msg and "(6, 4, 18)" in msg


def test_not_a_case_folder(tmp_path):
    (msg,) = _problems(tmp_path)
    assert "not a case folder" in msg


def test_validate_command(tiny_case, case_copy):
    ok = run_cli("cases", "validate", tiny_case)
    assert ok.returncode == 0 and "ok" in ok.stdout
    (case_copy / "jpeg" / "000001.jpg").unlink()
    bad = run_cli("cases", "validate", tiny_case, case_copy)
    assert bad.returncode == 1
    assert "000001.jpg" in bad.stderr and "Traceback" not in bad.stderr
