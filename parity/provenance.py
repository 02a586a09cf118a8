"""Where a result came from: git state, package versions, content hashes."""
from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("parity", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxconverter-common", "pandas", "pyarrow", "tensorrt")


def git_sha(path: str | Path | None = None) -> str | None:
    """HEAD of the repository holding `path` (parity's own checkout by default), '+dirty' if modified."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def default_cache_dir() -> Path:
    """Where parity caches artifacts, evaluation units, content hashes and error logs."""
    import os

    env = os.environ.get("PARITY_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "parity"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj) -> str:
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def source_hash(parts: tuple[str, ...]) -> str:
    """A hash of the source of parity's modules and packages named by `parts` (paths under parity/):
    the code that decides a result's numbers, part of every resume and cache key."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for part in parts:
        p = root / part
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def machine() -> dict:
    """What a result was computed on: reduced-precision differences depend on the CPU's vector units."""
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"system": platform.system(), "arch": platform.machine(), "cpu": cpu, "cpus": os.cpu_count()}
