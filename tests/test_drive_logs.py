"""Drive logs (parity cases import bag): real ROS 1 / ROS 2 bags and MCAP files written with the
libraries' own writers, imported, validated, decoded against OpenCV and replayed; bad logs refused
in one line naming the file, topic and message."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from parity.cases.format import load_case
from parity.colour import nv12_to_rgb

from . import drive_logs as D
from .conftest import run_main

TOPIC = "/camera/front/image_raw"


def _opencv_frame0(kind: str) -> np.ndarray:
    """What OpenCV makes of frame 0's unpadded data: the reference each import is held to."""
    rgb = D.road(0)
    if kind == "nv12":
        return cv2.cvtColor(D.nv12_bt601_limited(rgb), cv2.COLOR_YUV2RGB_NV12)
    if kind == "yuv422":
        return cv2.cvtColor(D.uyvy(rgb).reshape(D.H, D.W, 2), cv2.COLOR_YUV2RGB_UYVY)
    if kind == "bgr8":
        return rgb
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1]


LOGS = {  # name: (writer, topic, what frame 0 is, stream)
    "ros1-nv12-padded": (lambda d: D.write_ros1_bag(d / "drive.bag", "nv12", 8, step_pad=64), TOPIC, "nv12", "nv12"),
    "ros2-sqlite-yuv422": (lambda d: D.write_ros2_bag(d / "drive", "yuv422", 8, step_pad=32), TOPIC, "yuv422", "rgb"),
    "ros2-mcap-bgr8": (lambda d: D.write_ros2_bag(d / "drive", "bgr8", 8, storage="mcap", step_pad=16), TOPIC, "bgr8", "rgb"),
    "mcap-ros2-nv12": (lambda d: next(D.write_ros2_bag(d / "bag", "nv12", 8, storage="mcap", step_pad=64).glob("*.mcap")), TOPIC, "nv12", "nv12"),
    "ros1-jpeg": (lambda d: D.write_ros1_bag(d / "drive.bag", None, 8, compressed=True), TOPIC + "/compressed", "jpeg", "jpeg"),
    "foxglove-jpeg": (lambda d: D.write_foxglove_mcap(d / "drive.mcap", 8), "/camera/front/compressed", "jpeg", "jpeg"),
    "foxglove-raw-yuv422": (lambda d: D.write_foxglove_mcap(d / "drive.mcap", 8, raw="yuv422"), "/camera/front/raw", "yuv422", "rgb"),
}


@pytest.mark.parametrize("name", list(LOGS))
def test_each_log_imports_validates_decodes_as_opencv_does_and_replays(name, random_checkpoint, cache_dir, tmp_path):
    checkpoint = random_checkpoint
    write, topic, kind, stream = LOGS[name]
    log = write(tmp_path)
    r = run_main("cases", "import", "bag", log, "--topic", topic, "--out", tmp_path / "cases", "--name", "drive")
    assert r.returncode == 0, r.stderr
    assert run_main("cases", "validate", tmp_path / "cases" / "drive").returncode == 0
    case = load_case(tmp_path / "cases" / "drive")
    assert case.streams == [stream] and len(case) == 8 and (case.width, case.height) == (D.W, D.H)
    frame = case.read(0, stream)
    rgb = nv12_to_rgb(frame, "bt601", "limited") if stream == "nv12" else frame
    assert np.abs(rgb.astype(int) - _opencv_frame0(kind)).max() <= 1
    # header stamps every 100 ms: times from them, not from the log's receive times 3 ms later
    np.testing.assert_allclose(case.timestamps, np.arange(8) * 0.1, atol=1e-6)
    assert case.meta["source"]["time_source"] == "header" and case.meta["fps"] == pytest.approx(10.0)
    assert not any((tmp_path / "cases" / "drive").glob("frames/*"))  # nothing copied: the frames stay in the log
    r = run_main("replay", "--cases", tmp_path / "cases" / "drive", "--checkpoint", checkpoint.path, "--runners", "torch",
                 "--pipeline", "vehicle", "--cache-dir", cache_dir, "--no-progress", "--no-report", "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["results"][0]["frames"] == 8


def test_camera_info_becomes_the_camera_and_the_yuv_assumption_is_recorded(tmp_path):
    log = D.write_ros1_bag(tmp_path / "drive.bag", "nv12", 4)
    r = run_main("cases", "import", "bag", log, "--topic", TOPIC, "--camera-info", "/camera/front/camera_info", "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "assumed bt601-limited" in r.stdout
    meta = json.loads(next((tmp_path / "c").glob("*/case.json")).read_text())
    assert meta["camera"] == {"fx": 300.0, "fy": 300.0, "cx": 160.0, "cy": 90.0}
    assert meta["isp"]["assumed"] is True and meta["source"]["camera_info"]["distortion_model"] == "plumb_bob"
    r = run_main("cases", "import", "bag", log, "--topic", TOPIC, "--yuv", "bt709-full", "--out", tmp_path / "d", "--name", "x")
    assert r.returncode == 0 and "assumed" not in r.stdout
    assert json.loads((tmp_path / "d" / "x" / "case.json").read_text())["isp"] == {"yuv_matrix": "bt709", "yuv_range": "full",
                                                                                  "chroma": "4:2:0", "assumed": False}


def test_list_shows_image_topics_with_encoding_size_and_rate(tmp_path):
    log = D.write_ros1_bag(tmp_path / "drive.bag", "nv12", 11)
    r = run_main("cases", "import", "bag", log, "--list")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith(TOPIC))
    assert "sensor_msgs/Image" in line and " 11 " in line and "nv12" in line and "320x180" in line
    assert "camera_info" in r.stdout


def test_selection_duplicates_and_gaps_are_reported_not_retimed(tmp_path):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    T = ts.types
    stamps = [0, 100, 200, 200, 300, 700, 800, 900]  # ms: a repeated stamp, then a 400 ms gap
    with Writer(tmp_path / "d.bag") as w:
        c = w.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
        for i, ms in enumerate(stamps):
            ns = 10**18 + ms * 10**6
            data, h, step = D.encoded("bgr8", D.road(i))
            msg = T["sensor_msgs/msg/Image"](header=T["std_msgs/msg/Header"](seq=i, stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                                                             frame_id="c"), height=h, width=D.W, encoding="bgr8", is_bigendian=0, step=step, data=data)
            w.write(c, ns + i * 1000, ts.serialize_ros1(msg, "sensor_msgs/msg/Image"))
    r = run_main("cases", "import", "bag", tmp_path / "d.bag", "--topic", TOPIC, "--out", tmp_path / "c", "--name", "d")
    assert r.returncode == 0, r.stderr
    assert "1 message(s) dropped" in r.stdout and "1 gap(s)" in r.stdout
    case = load_case(tmp_path / "c" / "d")
    src = case.meta["source"]
    assert src["dropped"][0]["message"] == 3 and src["gaps"] == [{"after_frame": 3, "seconds": pytest.approx(0.4)}]
    np.testing.assert_allclose(case.timestamps, [0, 0.1, 0.2, 0.3, 0.7, 0.8, 0.9], atol=1e-9)  # never re-timed
    assert np.abs(case.read(4, "rgb").astype(int) - D.road(5)).max() == 0  # frame 4 is message 5 (message 3 dropped)
    r = run_main("cases", "import", "bag", tmp_path / "d.bag", "--topic", TOPIC, "--out", tmp_path / "e", "--name", "e",
                 "--start", "0.15", "--every", "2", "--time", "log")
    assert r.returncode == 0, r.stderr
    e = load_case(tmp_path / "e" / "e")
    assert e.meta["source"]["time_source"] == "log" and [f["source_file"][-2:] for f in e.meta["frames"]] == ["02", "04", "06"]


def test_a_bag_case_replays_lazily_and_a_changed_bag_is_refused(random_checkpoint, cache_dir, tmp_path):
    log = D.write_ros1_bag(tmp_path / "drive.bag", "nv12", 24, step_pad=64)
    assert run_main("cases", "import", "bag", log, "--topic", TOPIC, "--camera-info", "/camera/front/camera_info",
                    "--out", tmp_path / "c", "--name", "drive").returncode == 0
    case = tmp_path / "c" / "drive"
    args = ["replay", "--cases", case, "--checkpoint", random_checkpoint.path, "--runners", "torch,ort-fp16", "--pipeline", "vehicle,training",
            "--cache-dir", cache_dir, "--no-progress", "--no-report"]
    r = run_main(*args, "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    res = {(x["runner"], x["pipeline"]): x for x in s["results"]}
    assert all(x["frames"] == 24 for x in res.values())
    assert res[("torch", "vehicle")]["accuracy"] is None  # no GT: absent (NaN, written as null), not 0
    assert np.isfinite(res[("ort-fp16", "vehicle")]["added_bend_p99_px"])
    assert r.stdout.lstrip().startswith("deployment deltas") and "no case has GT" in r.stdout  # no GT: the deltas lead
    assert run_main("report", tmp_path / "r").returncode == 0
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.index("<h2") == html.index('<h2 id="deployment-deltas')
    frames = pd.read_parquet(tmp_path / "r" / "frames.parquet")
    assert set(frames.case) == {"drive"} and frames.frame.max() == 23
    # The same frames as a copy would give: the vehicle pipeline on the log's NV12 equals it on NV12 files of the same bytes.
    from parity.preprocessing.pipeline import vehicle_pipeline

    c = load_case(case)
    x = vehicle_pipeline().prepare(c, np.arange(3))
    ref = np.stack([vehicle_pipeline().apply(nv12_to_rgb(D.nv12_bt601_limited(D.road(i)), "bt601", "limited")[None])[0] for i in range(3)])
    np.testing.assert_allclose(x, ref, atol=1e-6)
    # One byte of one image changes, the size does not: the case is refused, naming the log.
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    r = run_main(*args, "--out", tmp_path / "r2")
    assert r.returncode == 2 and "drive.bag" in r.stderr and "changed since" in r.stderr and "Traceback" not in r.stderr


def _bad(tmp_path, log, topic, *extra):
    r = run_main("cases", "import", "bag", log, "--topic", topic, "--out", tmp_path / "c", *extra)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_bad_logs_are_refused_in_one_line_naming_file_topic_and_message(tmp_path):
    log = D.write_ros1_bag(tmp_path / "drive.bag", "nv12", 6)
    line = _bad(tmp_path, log, "/camera/rear/image_raw")
    assert "drive.bag" in line and "/camera/rear/image_raw" in line and TOPIC in line  # names what does exist

    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    T = ts.types
    for name, enc, step in (("bayer.bag", "bayer_rggb8", D.W), ("narrow.bag", "bgr8", 3 * D.W - 3)):
        with Writer(tmp_path / name) as w:
            c = w.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
            for i in range(3):
                good = i < 2  # message 2 is the bad one
                data, h, st = D.encoded("bgr8", D.road(i))
                msg = T["sensor_msgs/msg/Image"](header=T["std_msgs/msg/Header"](seq=i, stamp=T["builtin_interfaces/msg/Time"](sec=5 + i, nanosec=0), frame_id="c"),
                                                 height=h, width=D.W, encoding="bgr8" if good else enc, is_bigendian=0,
                                                 step=st if good else step, data=data)
                w.write(c, (5 + i) * 10**9, ts.serialize_ros1(msg, "sensor_msgs/msg/Image"))
        line = _bad(tmp_path, tmp_path / name, TOPIC)
        assert name in line and TOPIC in line and "message 2" in line, line
        assert ("unsupported encoding 'bayer_rggb8'" if enc != "bgr8" else "step 957 is smaller than a row") in line

    fox = D.write_foxglove_mcap(tmp_path / "t.mcap", 8)
    fox.write_bytes(fox.read_bytes()[: fox.stat().st_size // 2])
    line = _bad(tmp_path, fox, "/camera/front/compressed")
    assert "t.mcap" in line and "/camera/front/compressed" in line and "truncated" in line
    for damaged in (D.write_ros1_bag(tmp_path / "cut.bag", "nv12", 6), next(D.write_ros2_bag(tmp_path / "cut2", "nv12", 6).glob("*.db3"))):
        damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
        line = _bad(tmp_path, damaged if damaged.suffix == ".bag" else damaged.parent, TOPIC)
        assert (damaged.name in line if damaged.suffix == ".bag" else damaged.parent.name in line) and TOPIC in line, line
    line = _bad(tmp_path, tmp_path / "nope.bag", TOPIC)
    assert "nope.bag" in line and "no such" in line
