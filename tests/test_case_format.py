import json

import numpy as np
import pytest

from parity.cases.format import load_case
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
    assert bad.returncode == 2  # bad input
    assert "000001.jpg" in bad.stderr and "Traceback" not in bad.stderr


def test_extra_frame_file_is_reported(case_copy):
    (case_copy / "frames" / "000099.nv12").write_bytes(b"\0" * 345600)
    (msg,) = _problems(case_copy)
    assert "000099.nv12: extra frame file not listed" in msg


def test_wrong_image_size_is_reported(case_copy):
    from PIL import Image

    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(case_copy / "jpeg" / "000002.jpg")
    (msg,) = _problems(case_copy)
    assert "000002.jpg: frame is 200x100, case.json image is 640x360" in msg


def test_gt_points_and_labelled_frames(case_copy):
    case = load_case(case_copy)
    assert case.gt_points.shape == (6, 4, 18, 3) and case.labelled.all()
    _edit(case_copy, lambda m: m["lanes"].update(labelled_frames=[0, 9]))
    (msg,) = _problems(case_copy)
    assert "lanes.labelled_frames" in msg


def test_cases_resolve_from_globs_and_suite_names(tmp_path, tiny_case, monkeypatch):
    import shutil

    from parity.cases.discovery import find_cases

    suite = tmp_path / "cases" / "default"
    for n in ("a_day", "b_night", "c_day"):
        shutil.copytree(tiny_case, suite / n)
    assert [p.name for p in find_cases([str(suite / "*_day")])] == ["a_day", "c_day"]
    assert [p.name for p in find_cases([str(tmp_path / "cases")])] == ["a_day", "b_night", "c_day"]  # nested suites
    monkeypatch.setenv("PARITY_CASES_DIR", str(tmp_path / "cases"))
    assert [p.name for p in find_cases(["default"])] == ["a_day", "b_night", "c_day"]
    with pytest.raises(CaseError, match="suite not generated yet"):
        find_cases(["train"])
    with pytest.raises(CaseError, match="no folder matches"):
        find_cases([str(suite / "*_dusk")])


def test_synth_command_is_byte_identical_and_preview_draws(tmp_path):
    for d in ("a", "b"):
        res = run_cli("cases", "synth", "--scenario", "night", "--frames", "4", "--seed", "7", "--out", tmp_path / d)
        assert res.returncode == 0, res.stderr
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    assert run_cli("cases", "validate", tmp_path / "a").returncode == 0
    res = run_cli("cases", "synth", "--scenario", "nite", "--out", tmp_path / "c")
    assert res.returncode == 2 and "did you mean 'night'" in res.stderr

    from PIL import Image

    res = run_cli("cases", "preview", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "sheet.png")
    assert res.returncode == 0, res.stderr
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape[1] == 3 * 480 and (sheet[..., 0] > 200).sum() > 200  # lane polylines are drawn
