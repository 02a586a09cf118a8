"""Importers and exporters, on small hand-written samples of each public format."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from parity.cases.format import load_case
from parity.cli import main
from parity.cases.importers import import_culane, import_images, import_tusimple, import_video
from parity.errors import CaseError

from .conftest import run_cli, run_main

H_SAMPLES = list(range(160, 720, 40))  # 14 rows of a 1280x720 TuSimple frame


def _tusimple_sample(root):
    """Two clips in TuSimple's layout; the 20th frame of each is labelled, as in the dataset."""
    lines = []
    for clip in ("clips/0313-1/60", "clips/0531/1492"):
        d = root / clip
        d.mkdir(parents=True)
        for i in range(1, 21):
            Image.fromarray(np.full((720, 1280, 3), 60 + i, np.uint8)).save(d / f"{i}.jpg", quality=90)
        lanes = [
            [-2, -2] + [int(600 - 20 * k) for k in range(12)],
            [-2] + [int(700 + 25 * k) for k in range(13)],
            [-2] * 6 + [int(300 - 30 * k) for k in range(8)],
        ]
        lines.append(json.dumps({"lanes": lanes, "h_samples": H_SAMPLES, "raw_file": f"{clip}/20.jpg"}))
    labels = root / "label_data.json"
    labels.write_text("\n".join(lines) + "\n")
    return labels, [json.loads(x) for x in lines]


def test_tusimple_import_gt_round_trip(tmp_path):
    labels, records = _tusimple_sample(tmp_path / "tusimple")
    cases = import_tusimple([labels], tmp_path / "tusimple", tmp_path / "cases")
    assert [c.name for c in cases] == ["clips_0313-1_60", "clips_0531_1492"]
    case = load_case(cases[0])
    assert len(case) == 20 and case.labelled.sum() == 1 and case.labelled[19]
    assert case.frame_label(19) == "clips/0313-1/60/20.jpg"
    out = tmp_path / "gt.json"
    assert main(["export", "--format", "tusimple", "--gt", str(tmp_path / "cases"), "--only-labelled", "--out", str(out)]) == 0
    back = [json.loads(x) for x in out.read_text().splitlines()]
    assert [b["raw_file"] for b in back] == [r["raw_file"] for r in records]
    for b, r in zip(back, records):
        assert b["h_samples"] == r["h_samples"]
        np.testing.assert_allclose(np.asarray(b["lanes"], float), np.asarray(r["lanes"], float), atol=1.0)


def test_tusimple_import_replay_export_predictions(tmp_path, random_checkpoint, cache_dir):
    labels, records = _tusimple_sample(tmp_path / "tusimple")
    import_tusimple([labels], tmp_path / "tusimple", tmp_path / "cases")
    run = tmp_path / "run"
    assert main(["replay", "--cases", str(tmp_path / "cases"), "--checkpoint", str(random_checkpoint.path), "--runners", "torch",
                 "--pipeline", "vehicle", "--out", str(run), "--cache-dir", str(cache_dir), "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["provenance"]["cases"]["clips_0531_1492"]["labelled_frames"] == 1
    df = pd.read_parquet(run / "frames.parquet")
    assert df.frame_accuracy.notna().sum() == 2 * 4  # only the labelled frame of each clip is scored (x 4 lanes)
    out = tmp_path / "pred.json"
    assert main(["export", "--format", "tusimple", "--run", str(run), "--runner", "torch", "--pipeline", "vehicle", "--out", str(out)]) == 0
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(preds) == 40 and preds[19]["raw_file"] == "clips/0313-1/60/20.jpg"
    for p in preds:
        assert p["h_samples"] == H_SAMPLES and all(len(lane) == len(H_SAMPLES) for lane in p["lanes"])
        assert p["run_time"] > 0


def test_tusimple_bad_label_line_names_file_and_line(tmp_path):
    labels, _ = _tusimple_sample(tmp_path / "t")
    labels.write_text(labels.read_text() + '{"lanes": [[1, 2]], "h_samples": [1]}\n')
    with pytest.raises(CaseError, match=r"label_data.json:3: not a TuSimple label line"):
        import_tusimple([labels], tmp_path / "t", tmp_path / "cases")


def test_culane_import_and_export_round_trip(tmp_path):
    seq = tmp_path / "driver_23_30frame" / "05151649_0422.MP4"
    seq.mkdir(parents=True)
    ys = np.arange(580, 250, -10.0)
    lanes = [np.c_[400 + 0.8 * (580 - ys), ys], np.c_[900 - 0.9 * (580 - ys[:20]), ys[:20]]]
    for i in range(3):
        Image.fromarray(np.full((590, 1640, 3), 90, np.uint8)).save(seq / f"{i * 30:05d}.jpg")
        if i != 1:  # the middle frame is unlabelled
            (seq / f"{i * 30:05d}.lines.txt").write_text("\n".join(" ".join(f"{v:.3f}" for v in l.ravel()) for l in lanes) + "\n")
    case = load_case(import_culane(seq, tmp_path / "cases"))
    assert len(case) == 3 and case.labelled.tolist() == [True, False, True]
    assert case.gt.shape == (3, 2, len(ys))
    out = tmp_path / "culane_out"
    assert main(["export", "--format", "culane", "--gt", str(case.root), "--only-labelled", "--out", str(out)]) == 0
    files = sorted((out / case.name).glob("*.lines.txt"))
    assert [f.name for f in files] == ["00000.lines.txt", "00060.lines.txt"]
    back = [np.asarray(line.split(), float).reshape(-1, 2) for line in files[0].read_text().splitlines()]
    for got, want in zip(back, lanes):
        np.testing.assert_allclose(got[np.argsort(got[:, 1])], want[np.argsort(want[:, 1])], atol=0.01)


def test_images_and_video_import(tmp_path):
    import cv2

    cam = tmp_path / "cam.json"
    cam.write_text(json.dumps({"fx": 500, "fy": 500, "cx": 63.5, "cy": 47.5, "height_m": 1.4, "pitch_deg": 2}))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (1, 2, 10):  # natural order: 1, 2, 10
        Image.fromarray(np.full((96, 128, 3), i * 20, np.uint8)).save(frames / f"img{i}.png")
    case = load_case(import_images(frames, cam, tmp_path / "cases", fps=10))
    assert len(case) == 3 and case.streams == ["png"] and case.meta["camera"]["fx"] == 500
    assert [case.frame_label(i) for i in range(3)] == ["img1.png", "img2.png", "img10.png"]
    assert case.read(2, "png")[0, 0, 0] == 200

    video = tmp_path / "drive.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(6):
        w.write(np.full((96, 128, 3), 30 * i, np.uint8))
    w.release()
    vcase = load_case(import_video(video, cam, tmp_path / "cases"))
    assert len(vcase) == 6 and vcase.streams == ["png"]
    np.testing.assert_allclose(vcase.timestamps, np.arange(6) / 10, atol=1e-3)
    assert abs(int(vcase.read(5, "png").mean()) - 150) <= 3
    # the camera is optional (case.json's camera is): without it, the case has none, from the command line too
    r = run_main("cases", "import", "images", "--folder", frames, "--fps", "10", "--out", tmp_path / "nocam", "--name", "n")
    assert r.returncode == 0, r.stderr
    assert "camera" not in load_case(tmp_path / "nocam" / "n").meta
    r = run_main("cases", "import", "video", "--video", video, "--out", tmp_path / "nocam", "--name", "v")
    assert r.returncode == 0 and "camera" not in load_case(tmp_path / "nocam" / "v").meta, r.stderr


def test_a_replay_records_which_stream_each_pipeline_read_and_says_when_the_vehicle_reads_rgb(tmp_path, random_checkpoint):
    import cv2

    video = tmp_path / "drive.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(4):
        w.write(np.full((96, 128, 3), 30 * i, np.uint8))
    w.release()
    case = import_video(video, None, tmp_path / "cases")
    r = run_cli("replay", "--cases", case, "--checkpoint", random_checkpoint.path, "--runners", "torch", "--pipeline", "vehicle,training",
                "--out", tmp_path / "run", "--no-progress", "--no-report", "--cache-dir", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "drive: pipeline vehicle reads the png stream (the case has no nv12 stream): its YUV matrix, range and chroma" in r.stderr
    assert "pipeline training reads" not in r.stderr  # the training pipeline reads RGB images as it should
    doc = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert doc["provenance"]["cases"]["drive"]["streams"] == {"vehicle": "png", "training": "png"}


def test_camera_json_is_checked(tmp_path):
    cam = tmp_path / "cam.json"
    cam.write_text(json.dumps({"fx": 500, "cy": "middle"}))
    (tmp_path / "f").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "f" / "a.png")
    with pytest.raises(CaseError) as ei:
        import_images(tmp_path / "f", cam, tmp_path / "cases", fps=10)
    msg = "\n".join(ei.value.problems)
    assert "fy: required finite number" in msg and "cy: required finite number" in msg and str(cam) in msg
