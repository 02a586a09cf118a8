"""Drive logs written with the libraries' own writers (rosbags' ROS 1 and ROS 2 writers, mcap's
ROS 2 and protobuf writers), holding frames a test knows: a smooth synthetic road so replays decode
lanes, encoded as a camera driver would (NV12 with a padded step, 4:2:2, bgr8, JPEG)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

W, H = 320, 180


def road(i: int, w: int = W, h: int = H) -> np.ndarray:
    """RGB frame i: grey road, two white lane lines drifting slowly, sky above."""
    img = np.full((h, w, 3), (70, 70, 75), np.uint8)
    img[: h // 3] = (150, 180, 210)
    for base in (0.3, 0.7):
        x0, x1 = int(w * (0.5 + (base - 0.5) * 0.2) + i), int(w * base * 1.2 - w * 0.1 + i)
        cv2.line(img, (x0, h // 3), (x1, h - 1), (235, 235, 235), 3)
    return img


def nv12_bt601_limited(rgb: np.ndarray) -> np.ndarray:
    from parity.colour import rgb_to_nv12

    return rgb_to_nv12(rgb, "bt601", "limited")


def padded(plane: np.ndarray, step: int) -> np.ndarray:
    """Rows of `plane` (uint8, rows x bytes) laid out `step` bytes apart, the padding filled with 0xAB."""
    out = np.full((plane.shape[0], step), 0xAB, np.uint8)
    out[:, : plane.shape[1]] = plane
    return out


def uyvy(rgb: np.ndarray) -> np.ndarray:
    """4:2:2 UYVY bytes (H x 2W) of an RGB frame, BT.601 limited."""
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)  # full-swing BT.601; rescaled to limited below
    y = 16 + yuv[..., 0].astype(np.float32) * 219 / 255
    u = 128 + (yuv[..., 1].astype(np.float32) - 128) * 224 / 255
    v = 128 + (yuv[..., 2].astype(np.float32) - 128) * 224 / 255
    out = np.empty((rgb.shape[0], rgb.shape[1] // 2, 4), np.float32)
    out[..., 0] = (u[:, 0::2] + u[:, 1::2]) / 2
    out[..., 1] = y[:, 0::2]
    out[..., 2] = (v[:, 0::2] + v[:, 1::2]) / 2
    out[..., 3] = y[:, 1::2]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(rgb.shape[0], -1)


def encoded(encoding: str, rgb: np.ndarray, step_pad: int = 0) -> tuple[np.ndarray, int, int]:
    """(data, height field, step) of a sensor_msgs/Image of `encoding`."""
    h, w = rgb.shape[:2]
    if encoding == "nv12":
        plane = nv12_bt601_limited(rgb)
        step = w + step_pad
        return padded(plane, step).ravel(), h, step
    if encoding == "yuv422":
        plane = uyvy(rgb)
        step = 2 * w + step_pad
        return padded(plane, step).ravel(), h, step
    if encoding == "bgr8":
        step = 3 * w + step_pad
        return padded(np.ascontiguousarray(rgb[..., ::-1]).reshape(h, -1), step).ravel(), h, step
    raise ValueError(encoding)


def write_ros1_bag(path: Path, encoding: str, frames: int, step_pad: int = 64, camera_info: bool = True, fps: float = 10.0,
                   compressed: bool = False) -> Path:
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    T = ts.types
    with Writer(path) as w:
        kind = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        img = w.add_connection("/camera/front/image_raw" + ("/compressed" if compressed else ""), kind, typestore=ts)
        info = w.add_connection("/camera/front/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts) if camera_info else None
        for i in range(frames):
            ns = 1_700_000_000_000_000_000 + int(i * 1e9 / fps)
            header = T["std_msgs/msg/Header"](seq=i, stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam")
            if compressed:
                ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(road(i), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
                msg = T[kind](header=header, format="jpeg", data=np.frombuffer(jpg.tobytes(), np.uint8))
            else:
                data, height, step = encoded(encoding, road(i), step_pad)
                msg = T[kind](header=header, height=height, width=W, encoding=encoding, is_bigendian=0, step=step, data=data)
            w.write(img, ns + 3_000_000, ts.serialize_ros1(msg, kind))  # logged 3 ms after capture
            if info is not None and i == 0:
                cam = T["sensor_msgs/msg/CameraInfo"](header=header, height=H, width=W, distortion_model="plumb_bob",
                                                      D=np.zeros(5), K=np.array([300.0, 0, 160, 0, 300, 90, 0, 0, 1]),
                                                      R=np.eye(3).ravel(), P=np.zeros(12), binning_x=0, binning_y=0,
                                                      roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
                w.write(info, ns, ts.serialize_ros1(cam, "sensor_msgs/msg/CameraInfo"))
    return path


def write_ros2_bag(path: Path, encoding: str, frames: int, storage: str = "sqlite3", step_pad: int = 0, fps: float = 10.0) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        img = w.add_connection("/camera/front/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        for i in range(frames):
            ns = 1_700_000_000_000_000_000 + int(i * 1e9 / fps)
            header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam")
            data, height, step = encoded(encoding, road(i), step_pad)
            msg = T["sensor_msgs/msg/Image"](header=header, height=height, width=W, encoding=encoding, is_bigendian=0, step=step, data=data)
            w.write(img, ns + 3_000_000, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def write_foxglove_mcap(path: Path, frames: int, fps: float = 10.0, raw: str | None = None) -> Path:
    """Foxglove CompressedImage (JPEG), or RawImage of encoding `raw`, in protobuf with Foxglove's own
    schemas, via mcap's protobuf writer."""
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
    from mcap_protobuf.writer import Writer

    with open(path, "wb") as f, Writer(f) as w:
        for i in range(frames):
            ns = 1_700_000_000_000_000_000 + int(i * 1e9 / fps)
            if raw:
                data, h, step = encoded(raw, road(i), 32)
                m = RawImage(width=W, height=h, encoding=raw, step=step, data=data.tobytes(), frame_id="cam")
            else:
                ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(road(i), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
                m = CompressedImage(format="jpeg", data=jpg.tobytes(), frame_id="cam")
            m.timestamp.seconds, m.timestamp.nanos = ns // 10**9, ns % 10**9
            w.write_message(topic="/camera/front/" + ("raw" if raw else "compressed"), message=m, log_time=ns + 3_000_000, publish_time=ns)
    return path
