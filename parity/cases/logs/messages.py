"""Drive-log messages -> frames and cameras, whatever wrote them.

The same image arrives as a ROS `sensor_msgs/Image` or `CompressedImage` (rosbags' dataclasses,
mcap-ros1/ros2's decoded objects), a Foxglove `RawImage` / `CompressedImage` (protobuf objects or
JSON dicts), so fields are read by name with `field`, and every type name is normalised to one
spelling (`sensor_msgs/Image`, `foxglove.RawImage`).

A raw frame becomes what the case format reads: NV12 stays NV12 (the vehicle pipeline converts it,
with its own matrix and range), everything else becomes RGB. `step` is honoured everywhere: rows
may be padded (ISPs align rows to 64 or 256 bytes), and a step smaller than a row's bytes is refused.
"""
from __future__ import annotations

import base64

import numpy as np

RAW = {"sensor_msgs/Image", "foxglove.RawImage", "foxglove_msgs/RawImage"}
COMPRESSED = {"sensor_msgs/CompressedImage", "foxglove.CompressedImage", "foxglove_msgs/CompressedImage"}
CAMERA_INFO = {"sensor_msgs/CameraInfo", "foxglove.CameraCalibration", "foxglove_msgs/CameraCalibration"}
# ROS's "yuv422" is UYVY (sensor_msgs/image_encodings.h); "yuv422_yuy2" and "yuyv" are YUYV.
YUV422 = {"yuv422": "uyvy", "uyvy": "uyvy", "yuv422_yuy2": "yuyv", "yuyv": "yuyv"}
RGB_LIKE = {"rgb8": 3, "bgr8": 3, "mono8": 1}
RAW_ENCODINGS = ("nv12", *YUV422, *RGB_LIKE)


class MessageError(ValueError):
    """A message that is not a frame parity can read (the caller names the file, topic and index)."""


def type_name(name: str) -> str:
    """`sensor_msgs/msg/Image` (ROS 2, rosbags) and `sensor_msgs/Image` (ROS 1) -> `sensor_msgs/Image`."""
    return name.replace("/msg/", "/")


def field(msg, name, default=None):
    if isinstance(msg, dict):
        return msg.get(name, default)
    return getattr(msg, name, default)


def stamp_ns(t) -> int | None:
    """A ROS Time (sec/nanosec, ROS 1 secs/nsecs), protobuf Timestamp (seconds/nanos) or JSON {sec, nsec} in ns; None if absent or zero."""
    if t is None:
        return None
    sec = next((field(t, k) for k in ("sec", "secs", "seconds") if field(t, k) is not None), None)
    nsec = next((field(t, k) for k in ("nanosec", "nsec", "nsecs", "nanos") if field(t, k) is not None), 0)
    if sec is None:
        return None
    ns = int(sec) * 1_000_000_000 + int(nsec)
    return ns or None


def header_stamp(msg) -> int | None:
    """The message's own capture time: the ROS header stamp, or Foxglove's `timestamp`."""
    header = field(msg, "header")
    return stamp_ns(field(header, "stamp")) if header is not None else stamp_ns(field(msg, "timestamp"))


def data_bytes(msg) -> bytes:
    data = field(msg, "data", b"")
    if isinstance(data, str):  # Foxglove JSON encodes bytes as base64
        return base64.b64decode(data)
    if isinstance(data, np.ndarray):
        return data.tobytes()
    return bytes(data)


def raw_geometry(msg) -> tuple[str, int, int, int]:
    """(encoding, width, luma height, step) of a raw image, checked against its data length.

    NV12 arrives under two conventions: `height` the image height with 1.5x as many rows of data
    (Isaac ROS, most drivers), or `height` already 1.5x the image; the data length tells which."""
    enc = str(field(msg, "encoding", "")).lower()
    w, h, step = int(field(msg, "width", 0)), int(field(msg, "height", 0)), int(field(msg, "step", 0))
    n = _data_len(field(msg, "data", b""))
    if enc not in RAW_ENCODINGS:
        raise MessageError(f"unsupported encoding {enc!r} (parity reads {', '.join(RAW_ENCODINGS)})")
    if w <= 0 or h <= 0:
        raise MessageError(f"image size {w}x{h}")
    row = w * RGB_LIKE.get(enc, 2 if enc in YUV422 else 1)
    if step < row:
        raise MessageError(f"step {step} is smaller than a row of {w} pixels in {enc} ({row} bytes)")
    if enc == "nv12":
        if w % 2:
            raise MessageError(f"NV12 needs an even width, got {w}")
        if n >= step * (h * 3 // 2) - (step - w) and h % 2 == 0:
            return enc, w, h, step
        if h % 3 == 0 and (h * 2 // 3) % 2 == 0 and n >= step * h - (step - w):
            return enc, w, h * 2 // 3, step
        raise MessageError(f"{n} bytes of data, too few for a {w}x{h} NV12 frame with step {step}")
    if n < step * (h - 1) + row:
        raise MessageError(f"{n} bytes of data, too few for {h} rows of step {step} ({enc} {w}x{h})")
    return enc, w, h, step


def _data_len(data) -> int:
    if isinstance(data, str):
        return len(base64.b64decode(data))
    return int(data.size) if isinstance(data, np.ndarray) else len(data or b"")


def _rows(data: bytes, rows: int, step: int, row_bytes: int) -> np.ndarray:
    """`rows` rows of `row_bytes` each from data laid out `step` bytes apart (the padding dropped)."""
    buf = np.frombuffer(data, np.uint8, count=min(len(data), rows * step))
    if buf.size < rows * step:  # the last row's padding may be absent
        buf = np.concatenate([buf, np.zeros(rows * step - buf.size, np.uint8)])
    return buf.reshape(rows, step)[:, :row_bytes]


def raw_frame(msg, yuv_matrix: str, yuv_range: str) -> tuple[str, np.ndarray]:
    """("nv12", (H*3/2)xW uint8) or ("rgb", HxWx3 uint8) from a raw image message."""
    enc, w, h, step = raw_geometry(msg)
    data = data_bytes(msg)
    if enc == "nv12":
        return "nv12", np.ascontiguousarray(_rows(data, h * 3 // 2, step, w))
    if enc in YUV422:
        from ...colour import yuv422_to_rgb

        return "rgb", yuv422_to_rgb(_rows(data, h, step, 2 * w), YUV422[enc], yuv_matrix, yuv_range)
    px = _rows(data, h, step, w * RGB_LIKE[enc]).reshape(h, w, RGB_LIKE[enc])
    if enc == "mono8":
        return "rgb", np.repeat(px, 3, axis=2)
    return "rgb", np.ascontiguousarray(px[..., ::-1] if enc == "bgr8" else px)


def compressed_format(msg) -> str:
    """jpeg or png from a CompressedImage's `format` ("jpeg", "png", ROS's "bgr8; jpeg compressed bgr8")."""
    fmt = str(field(msg, "format", "")).lower()
    for name, words in (("jpeg", ("jpeg", "jpg")), ("png", ("png",))):
        if any(w in fmt for w in words):
            return name
    raise MessageError(f"unsupported compressed format {fmt!r} (parity reads jpeg and png)")


def compressed_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding pixels."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise MessageError(f"not a readable image: {exc}") from None


def compressed_frame(msg) -> tuple[str, np.ndarray]:
    """(jpeg|png, HxWx3 uint8 RGB), decoded by Pillow as the case format's own JPEG/PNG files are."""
    import io

    from PIL import Image, UnidentifiedImageError

    fmt = compressed_format(msg)
    try:
        with Image.open(io.BytesIO(data_bytes(msg))) as im:
            return fmt, np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise MessageError(f"cannot decode the {fmt} data: {exc}") from None


def frame_size(kind: str, msg) -> tuple[int, int]:
    """(width, height) of a frame message, checked, without decoding its pixels."""
    if kind in RAW:
        _, w, h, _ = raw_geometry(msg)
        return w, h
    compressed_format(msg)
    return compressed_size(data_bytes(msg))


def camera_of(msg) -> tuple[dict, dict]:
    """(camera intrinsics for case.json, what else the message said) from a CameraInfo or Foxglove
    CameraCalibration: fx = K[0], cx = K[2], fy = K[4], cy = K[5]."""
    k = list(field(msg, "k", None) if field(msg, "k", None) is not None else field(msg, "K", []))
    if len(k) != 9 or not k[0] or not k[4]:
        raise MessageError(f"camera matrix K must hold 9 numbers with fx, fy > 0, got {k!r}")
    d = field(msg, "d", None) if field(msg, "d", None) is not None else field(msg, "D", [])
    extra = {"width": int(field(msg, "width", 0)), "height": int(field(msg, "height", 0)),
             "distortion_model": str(field(msg, "distortion_model", "")), "distortion": [float(v) for v in d]}
    return {"fx": float(k[0]), "fy": float(k[4]), "cx": float(k[2]), "cy": float(k[5])}, extra
