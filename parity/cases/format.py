"""The on-disk case format (schema version 1): a folder with `case.json`, frame files and optional GT lanes.

    <case>/case.json        metadata, camera, frame list (documented in docs/case-format.md)
    <case>/frames/*.nv12    frames as the vehicle ISP emitted them (NV12, 4:2:0)
    <case>/jpeg/*.jpg       optional RGB copy as a training set would hold it (also .png)
    <case>/lanes.npy        optional GT, float32 [frame, lane, anchor row], x in source pixels, NaN = absent

`load_case` validates everything it can without decoding pixels and raises one `CaseError` listing
every problem, each naming the file and the field. `case.json` is written last by `CaseWriter`, so a
folder without it is an unfinished case, never a corrupt one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import CaseError

SCHEMA_VERSION = 1
CASE_FILE = "case.json"
STREAMS = ("nv12", "jpeg", "png", "rgb")
RGB_STREAMS = ("jpeg", "png", "rgb")  # rgb: raw RGB frames kept in a drive log (rgb8, bgr8, mono8, 4:2:2 YUV)
DATASET_SOURCES = ("tusimple", "culane")  # imports whose frame paths are the names the official GT files use
MAX_CASE_JSON_BYTES = 64 << 20  # a case.json of 10,000 frames is ~2 MB
DEFAULT_MAX_FRAME_PIXELS = 8192 * 8192  # --max-frame-pixels (PARITY_MAX_FRAME_PIXELS) changes it
MAX_TIMESTAMP_S = 1e10  # seconds; epoch time is 1.8e9: a larger value is a unit error (ns, us), not a time
MAX_LISTED = 3  # a problem met on many frames is said once, with this many examples


def max_frame_pixels() -> int:
    """The frame-size cap: PARITY_MAX_FRAME_PIXELS (the CLI's --max-frame-pixels sets it), else 8192 x 8192."""
    raw = os.environ.get("PARITY_MAX_FRAME_PIXELS")
    try:
        return int(raw) if raw else DEFAULT_MAX_FRAME_PIXELS
    except ValueError:
        return DEFAULT_MAX_FRAME_PIXELS
# A case name becomes part of file names (run parts, exports): one path component, nothing hidden.
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+ ")


def name_problem(name) -> str | None:
    """Why `name` cannot name a case (or None): it must be one safe path component."""
    if not isinstance(name, str) or not name:
        return "missing or not a non-empty string"
    if len(name) > 128:
        return f"longer than 128 characters ({len(name)})"
    if name.startswith((".", " ")) or name.endswith(" ") or not set(name) <= NAME_CHARS:
        return (f"{name!r} is not a plain name: letters, digits, '_', '-', '.', '+' and spaces only, "
                "not starting with '.' (it becomes part of file names)")
    return None


def relative_path_problem(rel) -> str | None:
    """Why `rel` is not a relative path that stays inside its folder (or None)."""
    if not isinstance(rel, str) or not rel:
        return "missing path"
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or ".." in p.parts or "\\" in rel or "\0" in rel:
        return f"path {rel!r} must be relative and stay inside the case folder"
    return None


@dataclass
class Case:
    root: Path
    meta: dict
    timestamps: np.ndarray
    frame_files: list[dict[str, str]]
    gt: np.ndarray | None = None
    anchor_rows: np.ndarray | None = None
    lane_names: list[str] = field(default_factory=list)
    gt_points: np.ndarray | None = None  # [frame, lane, row, 3] metres, ISO 8855 vehicle frame
    labelled: np.ndarray | None = None  # bool [frame]: which frames carry GT (all when GT exists)
    log: object = None  # logs.frames.LogFrames: the frames live in the drive log case.json names
    _content_hash: str | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def width(self) -> int:
        return int(self.meta["image"]["width"])

    @property
    def height(self) -> int:
        return int(self.meta["image"]["height"])

    @property
    def streams(self) -> list[str]:
        return list(self.meta["streams"])

    @property
    def isp(self) -> dict:
        return self.meta.get("isp", {"yuv_matrix": "bt601", "yuv_range": "limited"})

    def __len__(self) -> int:
        return len(self.frame_files)

    def frame_label(self, index: int) -> str:
        """What a frame is called outside parity (its original file name for imported cases)."""
        entry = self.meta["frames"][index]
        return entry.get("source_file") or next(entry[s] for s in STREAMS if s in entry)

    def export_name(self, index: int) -> str:
        """The frame's name in exported predictions (TuSimple `raw_file`, CULane `.lines.txt` path): unique
        across cases. Frames imported from a dataset keep the dataset-relative path its official GT
        files use; every other frame is `<case name>/<its file in the case>` (synthetic cases all have
        `frames/000000.nv12`, image folders often `img1.png`)."""
        entry = self.meta["frames"][index]
        if entry.get("source_file") and (self.meta.get("source") or {}).get("kind") in DATASET_SOURCES:
            return entry["source_file"]
        return f"{self.name}/{entry.get('source_file') or next(entry[s] for s in STREAMS if s in entry)}"

    def read(self, index: int, stream: str) -> np.ndarray:
        """Frame `index` of `stream`: NV12 as a (H*3/2)xW uint8 array, RGB streams as HxWx3 uint8."""
        if self.log is not None and stream in self.streams:
            return self.log.read(index)
        rel = self.frame_files[index].get(stream)
        if rel is None:
            raise CaseError([f"{self.root / CASE_FILE}: frame {index} has no {stream!r} stream"])
        path = self.root / rel
        from PIL import Image

        try:
            if stream == "nv12":
                data = np.fromfile(path, dtype=np.uint8)
                expected = self.width * self.height * 3 // 2
                if data.size != expected:
                    raise ValueError(f"{data.size} bytes, expected {expected} for {self.width}x{self.height} NV12")
                return data.reshape(self.height * 3 // 2, self.width)
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
            if rgb.shape[:2] != (self.height, self.width):
                raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]}, case.json says {self.width}x{self.height}")
            return rgb
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise CaseError([f"{path}: cannot read frame {index} ({stream}): {exc}"]) from None

    def content_hash(self) -> str:
        """sha256 over case.json and the digest of the GT and every frame file: identifies exactly
        what was replayed. File digests are cached by (size, mtime, ctime, inode) in the parity cache
        (a file rewritten in place changes its ctime, which user space cannot set back), so a run
        does not re-read 400 MB of frames it has hashed before."""
        if self._content_hash is None:
            files = []
            lanes = self.meta.get("lanes")
            if lanes:
                files.append(lanes["file"])
                if lanes.get("points_file"):
                    files.append(lanes["points_file"])
            for entry in self.frame_files:
                files.extend(entry[s] for s in STREAMS if s in entry)
            files.extend(self._log_files())
            digests = file_digests(self.root, files)
            self._check_log(digests)
            h = hashlib.sha256()
            h.update((self.root / CASE_FILE).read_bytes())
            for rel in files:
                h.update(rel.encode())
                h.update(digests[rel].encode())
            self._content_hash = h.hexdigest()
        return self._content_hash


    def _log_files(self) -> list[str]:
        if self.log is None:
            return []
        from .logs.frames import log_file_paths

        return [str(p) for p in log_file_paths(self.log.path, self.meta["log"])]

    def _check_log(self, digests: dict[str, str]) -> None:
        """The log's bytes are the ones imported: a changed bag is refused, never replayed under the old case's name."""
        if self.log is None:
            return
        from .logs.frames import log_file_paths

        for path, rec in zip(log_file_paths(self.log.path, self.meta["log"]), self.meta["log"]["files"]):
            if digests[str(path)] != rec["sha256"]:
                raise CaseError([f"{path}: sha256 {digests[str(path)][:12]}..., the case was imported from {rec['sha256'][:12]}...: "
                                 f"the drive log changed since `parity cases import bag`; import it again"])


def file_digests(root: Path, files: list[str]) -> dict[str, str]:
    from ..provenance import default_cache_dir, sha256_file

    where = default_cache_dir() / "hashes" / f"{hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:32]}.json"
    try:
        known = json.loads(where.read_text())
    except (OSError, ValueError):
        known = {}
    out, fresh = {}, {}
    for rel in files:
        st = os.stat(root / rel)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = known.get(rel) if isinstance(known, dict) else None
        if isinstance(hit, list) and len(hit) == 5 and hit[:4] == stamp:
            out[rel] = hit[4]
        else:
            out[rel] = sha256_file(root / rel)
        fresh[rel] = stamp + [out[rel]]
    if fresh != known:
        try:
            atomic.write_json(where, fresh)
        except OSError:  # a read-only cache only costs the re-hash next time
            pass
    return out


def is_case_dir(path: Path) -> bool:
    return (path / CASE_FILE).is_file()


def _inside(root: Path, rel: str, _dirs: dict | None = None) -> bool:
    """`rel` names a file inside `root`, symlinks followed. The root and folders are resolved once per
    call site (`_dirs`, one root), files only when they are links: a case lists thousands of frames
    in a few folders."""
    if os.path.isabs(rel):
        return False
    if _dirs is None:
        _dirs = {}
    top = _dirs.get(None)
    if top is None:
        top = _dirs[None] = os.path.realpath(root)
    folder, name = os.path.split(os.path.join(root, rel))
    real = _dirs.get(folder)
    if real is None:
        real = _dirs[folder] = os.path.realpath(folder)
    path = os.path.join(real, name)
    if os.path.islink(path):
        path = os.path.realpath(path)
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def load_case(path: str | os.PathLike) -> Case:
    """Load and validate one case folder; raise CaseError listing every problem found."""
    root = Path(path)
    cj = root / CASE_FILE
    if not root.exists():
        raise CaseError([f"{root}: no such case folder"])
    if not cj.is_file():
        raise CaseError([f"{root}: not a case folder (no {CASE_FILE})"])
    try:
        if cj.stat().st_size > MAX_CASE_JSON_BYTES:
            raise CaseError([f"{cj}: {cj.stat().st_size} bytes, more than a case.json can sensibly be ({MAX_CASE_JSON_BYTES} max)"])
        meta = json.loads(cj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CaseError([f"{cj}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]) from None
    except RecursionError:
        raise CaseError([f"{cj}: nested too deeply to be a case.json"]) from None
    except ValueError as exc:  # json's limit on integer digits
        raise CaseError([f"{cj}: not a usable case.json: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError([f"{cj}: cannot read: {exc}"]) from None
    if not isinstance(meta, dict):
        raise CaseError([f"{cj}: top level must be an object, got {type(meta).__name__}"])

    problems: list[str] = []

    def bad(field_name: str, msg: str) -> None:
        problems.append(f"{cj}: {field_name}: {msg}")

    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CaseError([f"{cj}: schema_version: unsupported {version!r} (this parity reads {SCHEMA_VERSION})"])
    why = name_problem(meta.get("name"))
    if why:
        bad("name", why)
    camera = meta.get("camera")
    if camera is not None:
        from .camera import camera_problems

        problems.extend(f"{cj}: camera.{p}" for p in camera_problems(camera))
    isp = meta.get("isp")
    if isp is not None and not isinstance(isp, dict):
        bad("isp", f"must be an object {{yuv_matrix, yuv_range, chroma}}, got {type(isp).__name__}")
    elif isp:
        from ..colour import KR_KB, RANGES

        if not (isinstance(isp.get("yuv_matrix", "bt601"), str) and isp.get("yuv_matrix", "bt601") in KR_KB):
            bad("isp.yuv_matrix", f"must be one of {sorted(KR_KB)}, got {isp.get('yuv_matrix')!r}")
        if not (isinstance(isp.get("yuv_range", "limited"), str) and isp.get("yuv_range", "limited") in RANGES):
            bad("isp.yuv_range", f"must be one of {sorted(RANGES)}, got {isp.get('yuv_range')!r}")

    image = meta.get("image")
    width = height = None
    if not isinstance(image, dict):
        bad("image", "missing (expected {width, height})")
    else:
        width, height = image.get("width"), image.get("height")
        for key, val in (("width", width), ("height", height)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                bad(f"image.{key}", f"must be a positive integer, got {val!r}")
                width = height = None

    if width and height and width * height > max_frame_pixels():
        bad("image", f"{width}x{height} is {width * height} pixels, more than the cap of {max_frame_pixels()} "
                     "(8192 x 8192 by default; --max-frame-pixels N to raise it)")
        raise CaseError(problems)  # nothing of this size is hashed, read or allocated
    streams = meta.get("streams")
    if not isinstance(streams, list) or not streams or any(not isinstance(s, str) or s not in STREAMS for s in streams):
        bad("streams", f"must be a non-empty list drawn from {list(STREAMS)}, got {streams!r}")
        streams = []
    if "nv12" in streams and width and height and (width % 2 or height % 2):
        bad("image", f"NV12 needs even width and height, got {width}x{height}")

    fps = meta.get("fps")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not fps > 0:
        bad("fps", f"must be a positive number, got {fps!r}")

    log = meta.get("log")
    if log is not None:
        from .logs.frames import log_problems

        problems.extend(f"{cj}: {p}" for p in log_problems(root, log, streams))
    frames = meta.get("frames")
    timestamps: list[float] = []
    frame_files: list[dict[str, str]] = []
    if not isinstance(frames, list) or not frames:
        bad("frames", "missing or empty")
        frames = []
    nv12_bytes = width * height * 3 // 2 if width and height else None
    dirs: dict = {}  # folders already resolved (symlinks) for _inside
    missing: list[str] = []
    for i, entry in enumerate(frames):
        where = f"frames[{i}]"
        if not isinstance(entry, dict):
            bad(where, "must be an object {t, <stream>: path}")
            continue
        t, why = _timestamp(entry.get("t"), timestamps[-1] if timestamps else None)
        if why:
            bad(f"{where}.t", why)
        timestamps.append(t)
        files = {}
        if "source_file" in entry:
            why = relative_path_problem(entry["source_file"])
            if why:
                bad(f"{where}.source_file", why)
        if log is not None:
            ref = entry.get("log")
            if not (isinstance(ref, dict) and _is_int(ref.get("ns")) and ref["ns"] >= 0 and _is_int(ref.get("k", 0)) and ref.get("k", 0) >= 0):
                bad(f"{where}.log", f"must be {{ns: log time in ns, k: earlier messages at that time}}, got {ref!r}")
            frame_files.append(files)
            continue
        for s in streams:
            rel = entry.get(s)
            if not isinstance(rel, str) or not rel:
                bad(f"{where}.{s}", "missing path")
                continue
            if relative_path_problem(rel) or not _inside(root, rel, dirs):
                bad(f"{where}.{s}", f"path {rel!r} escapes the case folder")
                continue
            fp = root / rel
            if not fp.is_file():
                missing.append(f"{fp} ({where}.{s})")
                continue
            if s == "nv12" and nv12_bytes and fp.stat().st_size != nv12_bytes:
                problems.append(
                    f"{fp}: {fp.stat().st_size} bytes, expected {nv12_bytes} for {width}x{height} NV12 ({where})"
                )
            elif s in RGB_STREAMS and width and height:
                problems.extend(_image_size_problems(fp, width, height, where))
            files[s] = rel
        frame_files.append(files)

    gt = anchor_rows = points = labelled = None
    lane_names: list[str] = []
    lanes = meta.get("lanes")
    if lanes is not None:
        if not isinstance(lanes, dict):
            bad("lanes", "must be an object {file, names, anchor_rows}")
        else:
            lane_names = lanes.get("names") or []
            rows = lanes.get("anchor_rows")
            if not isinstance(lane_names, list) or not all(isinstance(n, str) for n in lane_names) or not lane_names:
                bad("lanes.names", "must be a non-empty list of strings")
                lane_names = []
            if not isinstance(rows, list) or not rows or not all(isinstance(r, (int, float)) and not isinstance(r, bool)
                                                                  and math.isfinite(r) for r in rows):
                bad("lanes.anchor_rows", "must be a non-empty list of finite numbers (rows in pixels)")
                rows = None
            else:
                anchor_rows = np.asarray(rows, dtype=np.float64)
                if np.any(np.diff(anchor_rows) <= 0):
                    bad("lanes.anchor_rows", "must be strictly increasing")
                if height and (anchor_rows.min() < 0 or anchor_rows.max() > height - 1):
                    bad("lanes.anchor_rows", f"rows must lie in [0, {height - 1}], got {anchor_rows.min()}..{anchor_rows.max()}")
            want = (len(frames), len(lane_names), len(rows) if rows else None)
            gt = _load_array(root, lanes, "file", want, "[frames, lanes, rows]", bad, problems, required=True)
            if lanes.get("points_file") is not None:
                points = _load_array(root, lanes, "points_file", (*want, 3), "[frames, lanes, rows, xyz]", bad, problems)
            lf = lanes.get("labelled_frames")
            if lf is None:
                labelled = np.ones(len(frames), dtype=bool)
            elif not isinstance(lf, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(frames) for i in lf):
                bad("lanes.labelled_frames", f"must be a list of frame indices in 0..{len(frames) - 1}")
            else:
                labelled = np.zeros(len(frames), dtype=bool)
                labelled[lf] = True

    if missing:
        problems.append(_many(f"{len(missing)} frame file(s) missing", missing) if len(missing) > MAX_LISTED else
                        "; ".join(f"{m}: missing frame file" for m in missing))
    problems.extend(_extra_files(root, frame_files, streams))
    if problems:
        raise CaseError(_summarised(problems))
    from .logs.frames import LogFrames

    return Case(
        root=root,
        meta=meta,
        timestamps=np.asarray(timestamps, dtype=np.float64),
        frame_files=frame_files,
        gt=gt,
        anchor_rows=anchor_rows,
        lane_names=lane_names,
        gt_points=points,
        labelled=labelled,
        log=LogFrames(root, log, frames, meta.get("isp") or {}) if log is not None else None,
    )


def _timestamp(t, previous: float | None) -> tuple[float, str | None]:
    """(t as float, None) or (NaN, why): finite, plausible seconds, increasing."""
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        return float("nan"), f"timestamp must be a number of seconds, got {t!r}"[:200]
    try:
        v = float(t)
    except OverflowError:
        return float("nan"), f"timestamp has {len(str(t))} digits; expected seconds (|t| <= {MAX_TIMESTAMP_S:g})"
    if not math.isfinite(v):
        return float("nan"), f"timestamp must be a finite number, got {t!r}"
    if abs(v) > MAX_TIMESTAMP_S:
        return float("nan"), f"timestamp {v:g} s is beyond {MAX_TIMESTAMP_S:g} s; timestamps are seconds (not ns or us)"
    if previous is not None and math.isfinite(previous) and not v > previous:
        return v, f"timestamps must increase: {v} after {previous}"
    return v, None


def _many(what: str, items: list[str]) -> str:
    return f"{what}: {', '.join(items[:MAX_LISTED])} ... and {len(items) - MAX_LISTED} more"


def _summarised(problems: list[str], keep: int = 20) -> list[str]:
    """At most `keep` problems: a flood (one malformed field on every frame) ends with a count of the rest."""
    return problems if len(problems) <= keep else problems[:keep] + [f"... and {len(problems) - keep} more problems"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _image_size_problems(path: Path, width: int, height: int, where: str) -> list[str]:
    """Reads the image header only (no decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size = im.size
    except Image.DecompressionBombError as exc:
        return [f"{path}: decompression bomb ({where}): {exc}"]
    except (OSError, UnidentifiedImageError) as exc:
        return [f"{path}: not a readable image ({where}): {exc}"]
    if size != (width, height):
        return [f"{path}: frame is {size[0]}x{size[1]}, case.json image is {width}x{height} ({where})"]
    return []


def _load_array(root, lanes, key, want, what, bad, problems, required=False):
    rel = lanes.get(key)
    if not isinstance(rel, str) or not _inside(root, rel):
        bad(f"lanes.{key}", f"missing or escapes the case folder: {rel!r}")
        return None
    path = root / rel
    if not path.is_file():
        problems.append(f"{path}: missing GT file (lanes.{key})")
        return None
    header = npy_header_problem(path, want, what)
    if header:
        problems.append(header)
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: not a readable .npy array: {exc}")
        return None
    if np.isinf(arr).any():
        problems.append(f"{path}: GT contains Inf (use NaN for absent points)")
        return None
    return arr.astype(np.float32)


def npy_header_problem(path: Path, want: tuple, what: str) -> str | None:
    """Read only the .npy header: the shape and dtype the case expects, and a file that holds them
    (a header claiming 268 GiB is refused before anything is allocated)."""
    from numpy.lib import format as npf

    try:
        with open(path, "rb") as f:
            version = npf.read_magic(f)
            shape, fortran, dtype = npf.read_array_header_2_0(f) if version >= (2, 0) else npf.read_array_header_1_0(f)
            offset = f.tell()
    except (OSError, ValueError, SyntaxError) as exc:
        return f"{path}: not a readable .npy array: {exc}"
    if tuple(shape) != tuple(want) or not np.issubdtype(dtype, np.floating):
        return f"{path}: GT must be float {what} = {want}, got {dtype} {tuple(shape)}"
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if path.stat().st_size < need:
        return f"{path}: holds {path.stat().st_size} bytes, its header promises {need}"
    return None


_STREAM_SUFFIXES = {"nv12": (".nv12", ".yuv"), "jpeg": (".jpg", ".jpeg"), "png": (".png",), "rgb": ()}


def _extra_files(root: Path, frame_files: list[dict[str, str]], streams: list[str]) -> list[str]:
    """Frame files lying in a stream's folders that case.json does not list (a frame dropped from the list).
    Compared by name within each listed folder, each folder resolved once (a case has thousands of frames)."""
    out = []
    root_real = root.resolve()
    for s in streams:
        by_folder: dict[str, set[str]] = {}
        for f in frame_files:
            if s in f:
                p = os.path.normpath(root / f[s])
                by_folder.setdefault(os.path.dirname(p), set()).add(os.path.basename(p))
        for folder in sorted(by_folder):
            if Path(folder).resolve() == root_real:
                continue
            try:
                names = sorted(e.name for e in os.scandir(folder))
            except OSError:  # a missing folder: its frames are reported missing elsewhere
                continue
            for name in names:
                if os.path.splitext(name)[1].lower() in _STREAM_SUFFIXES[s] and name not in by_folder[folder]:
                    out.append(f"{Path(folder) / name}: extra frame file not listed in case.json frames ({s})")
    return out


class CaseWriter:
    """Writes a case frame by frame; `close()` writes case.json last and atomically."""

    def __init__(self, root: str | os.PathLike, meta: dict, streams: list[str], jpeg_quality: int = 92):
        self.root = Path(root)
        self.meta = dict(meta)
        self.streams = list(streams)
        self.jpeg_quality = jpeg_quality
        self.frames: list[dict] = []
        self.lanes: list[np.ndarray] = []
        self.points: list[np.ndarray] = []
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / CASE_FILE).unlink(missing_ok=True)  # the case is unfinished until close()
        for s in self.streams:
            (self.root / _STREAM_DIR[s]).mkdir(exist_ok=True)

    def add(self, t: float, rgb: np.ndarray | None = None, nv12: np.ndarray | None = None, lanes=None, lanes3d=None) -> None:
        i = len(self.frames)
        entry: dict = {"t": round(float(t), 6)}
        for s in self.streams:
            rel = f"{_STREAM_DIR[s]}/{i:06d}.{_STREAM_EXT[s]}"
            if s == "nv12":
                nv12.tofile(self.root / rel)
            else:
                from PIL import Image

                img = Image.fromarray(rgb)
                if s == "jpeg":
                    # Fixed encoder settings keep the bytes reproducible for a given seed.
                    img.save(self.root / rel, format="JPEG", quality=self.jpeg_quality, subsampling=2, optimize=False)
                else:
                    img.save(self.root / rel, format="PNG", compress_level=1)
            entry[s] = rel
        self.frames.append(entry)
        if lanes is not None:
            self.lanes.append(np.asarray(lanes, dtype=np.float32))
        if lanes3d is not None:
            self.points.append(np.asarray(lanes3d, dtype=np.float32))

    def add_files(self, t: float, files: dict[str, str | os.PathLike], source_file: str | None = None, lanes=None) -> None:
        """Add a frame from existing files (hard-linked where possible, else copied), keeping its original name."""
        import shutil

        i = len(self.frames)
        entry: dict = {"t": round(float(t), 6)}
        for s in self.streams:
            src = Path(files[s])
            rel = f"{_STREAM_DIR[s]}/{i:06d}{src.suffix.lower()}"
            dst = self.root / rel
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            entry[s] = rel
        if source_file:
            entry["source_file"] = source_file
        self.frames.append(entry)
        if lanes is not None:
            self.lanes.append(np.asarray(lanes, dtype=np.float32))

    def close(self, lane_names: list[str] | None = None, anchor_rows=None, labelled_frames=None) -> Path:
        meta = {"schema_version": SCHEMA_VERSION, **self.meta, "streams": self.streams, "frames": self.frames}
        if self.lanes:
            _save_npy(self.root / "lanes.npy", np.stack(self.lanes))
            meta["lanes"] = {
                "file": "lanes.npy",
                "names": list(lane_names),
                "anchor_rows": [float(r) for r in anchor_rows],
            }
            if self.points:
                _save_npy(self.root / "lanes3d.npy", np.stack(self.points))
                meta["lanes"]["points_file"] = "lanes3d.npy"
                meta["lanes"]["points_frame"] = "ISO 8855 vehicle frame: x forward, y left, z up, metres, origin on the ground under the camera"
            if labelled_frames is not None:
                meta["lanes"]["labelled_frames"] = [int(i) for i in labelled_frames]
        atomic.write_json(self.root / CASE_FILE, meta)
        return self.root


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)


_STREAM_DIR = {"nv12": "frames", "jpeg": "jpeg", "png": "png"}
_STREAM_EXT = {"nv12": "nv12", "jpeg": "jpg", "png": "png"}
