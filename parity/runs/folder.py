"""A run owns its output folder: a lock, an in-progress marker, a manifest of its parts, and resume.

- **Lock.** `.parity.lock` holds an exclusive `flock` for the run's lifetime: a second run into the
  same folder is refused at once, naming the holder. The kernel drops the lock when its process
  dies, so a killed run never leaves the folder locked.
- **In progress.** `IN_PROGRESS` exists from the run's start until its final tables and summary are
  written; readers (`export`, `report`, `gate`, `baseline`) refuse a folder that has it: its tables
  would describe a run that did not finish.
- **Manifest.** `manifest.json` names the run (its kind and run key: everything that decides its
  numbers but the cases) and each finished part (one per case, its files and content key). Only
  the parts the manifest lists are read back; a stray file in the folder is never merged.
- **Parts by content.** Each part file carries its unit and content key in its parquet metadata
  and CRC page checksums; the manifest records each file's sha256. A part is reused only when its
  manifest entry names a plain file inside `parts/`, the file's sha256 is the recorded one and its
  metadata names this unit and key; anything else (another run's part copied in, two parts
  swapped, a truncated file, a path edited to leave the folder) is said in one line and recomputed.
  The final tables' sha256 are recorded when the run finishes, so a reader names a table that
  changed since (`check_finished`); the same command rebuilds it from the parts.
- **Resume.** The same command re-run (or with `--resume`) into a folder whose manifest has the same
  run key reuses every part whose content key still matches and computes the rest; the final
  tables are made from the parts either way, so they equal an uninterrupted run's. A folder that
  holds a different run is refused, or with `replace` (`--overwrite`) emptied of that run's files
  (only those its manifest lists); a folder with files no run made is always refused.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
from datetime import datetime, timezone
from hashlib import sha256
from pathlib import Path

from .. import atomic
from ..errors import UsageError
from ..provenance import sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MARKER = "IN_PROGRESS"
LOCK = ".parity.lock"
SCHEMA = "parity.manifest/1"
OWN = {MANIFEST, MARKER, LOCK, "parts"}
PART_METADATA = b"parity.part"  # the unit and content key inside each part file


def plain_name(name) -> bool:
    """A manifest's file entry may only name a file directly inside its folder."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "/" not in name and "\\" not in name


def part_problem(path: Path, unit: str, key: str, sha: str | None) -> str | None:
    """Why the part file at `path` is not this unit's part under this key (None: it is)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return "is missing"
    if sha is None:
        return "has no recorded sha256 (written before parts were verified)"
    if sha256_file(path) != sha:
        return "is not the file this run wrote (sha256 differs)"
    try:
        meta = json.loads((pq.read_schema(path).metadata or {}).get(PART_METADATA, b"{}"))
    except Exception as exc:  # pyarrow raises several types for a damaged footer
        return f"is not a readable parquet file ({type(exc).__name__})"
    if meta.get("unit") != unit or meta.get("key") != key:
        return f"holds the part of {meta.get('unit')!r} under another key"
    return None


def part_stem(name: str) -> str:
    """A file name for a case's part that cannot leave the folder whatever the case calls itself:
    a slug of the name and a hash of the whole name (two names never share a file)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:48] or "case"
    return f"{slug}-{sha256(name.encode()).hexdigest()[:10]}"


def check_finished(folder: str | os.PathLike) -> None:
    """Refuse a folder whose run has not finished (a reader would see another run's half)."""
    marker = Path(folder) / MARKER
    if not marker.exists():
        _check_tables(Path(folder))
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
            since = f" (pid {info.get('pid')} on {info.get('host')}, started {info.get('started')})"
        except (OSError, ValueError):
            since = ""
        raise UsageError(f"{folder}: the run in this folder has not finished{since}; if it was killed, "
                         "run the same command again (or with --resume) to finish it")


def _check_tables(folder: Path) -> None:
    """Refuse a finished folder whose final tables are not the ones its run wrote (sha256 in the manifest)."""
    try:
        doc = json.loads((folder / MANIFEST).read_text())
        recorded = doc.get("file_sha256") or {} if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return  # no manifest: the reader's own checks name what is missing
    for name, sha in (recorded.items() if isinstance(recorded, dict) else ()):
        path = folder / name
        if plain_name(name) and path.is_file() and sha256_file(path) != sha:
            raise UsageError(f"{path}: changed since its run finished (sha256 differs from the manifest's); "
                             "run the same command again to rebuild it from the run's parts")


def _manifest_problem(doc: dict) -> str | None:
    parts = doc.get("parts", {})
    if not isinstance(parts, dict) or not all(isinstance(e, dict) and isinstance(e.get("files", {}), dict) for e in parts.values()):
        return "parts must map each case to {key, files, sha256}"
    for field in ("files",):
        if field in doc and not (isinstance(doc[field], list) and all(isinstance(f, str) for f in doc[field])):
            return f"{field} must be a list of file names"
    if not isinstance(doc.get("extra", {}), dict):
        return "extra must be an object"
    return None


class RunFolder:
    """Context manager owning `path` for a run of `kind` whose numbers are decided by `run_key`."""

    def __init__(self, path: str | os.PathLike, kind: str, run_key: str, resume: bool = False, describe: dict | None = None,
                 replace: bool = False):
        self.path, self.kind, self.run_key, self.resume, self.replace = Path(path), kind, run_key, resume, replace
        self.describe = describe or {}
        self._lock_fd = None
        self.manifest: dict = {}
        # (unit, key) -> each file's (size, mtime_ns) when its hash was checked: a resumed run asks for a
        # part at start and again when collecting, and hashing it once is enough while the file is untouched.
        self._verified: dict[tuple[str, str], dict[Path, tuple[int, int]]] = {}

    # -- ownership ------------------------------------------------------------------------------------
    def __enter__(self) -> "RunFolder":
        self._prepare()
        self._lock()
        try:
            self._adopt()
            self._write_marker()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._unlock()

    def _prepare(self) -> None:
        p = self.path
        for parent in [p, *p.parents]:
            if parent.exists() and not parent.is_dir():
                raise UsageError(f"--out {p}: {parent} is a file, not a folder")
            if parent.exists():
                break
        try:
            (p / "parts").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {p}: cannot create the folder: {exc.strerror or exc}") from None
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"--out {p}: the folder is not writable")

    def _lock(self) -> None:
        import fcntl

        try:
            self._lock_fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"--out {self.path}: cannot create its lock file: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self._lock_fd, 512, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            self._lock_fd = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"--out {self.path}: another parity run is writing to this folder ({holder or 'unknown holder'}); "
                                 "wait for it or choose another --out") from None
            raise UsageError(f"--out {self.path}: cannot lock the folder: {exc.strerror or exc}") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, self._who().encode(), 0)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock; the file stays (harmless, reused by the next run)
            self._lock_fd = None

    @staticmethod
    def _who() -> str:
        return f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(timezone.utc).isoformat(timespec='seconds')}"

    def _adopt(self) -> None:
        """Start a new manifest, or continue the one of the same run; refuse anything else."""
        mf = self.path / MANIFEST
        old = None
        if mf.exists():
            try:
                old = json.loads(mf.read_text())
            except (OSError, ValueError):
                raise UsageError(f"--out {self.path}: {MANIFEST} is unreadable; this folder is not a run parity can continue") from None
            if not isinstance(old, dict) or old.get("schema") != SCHEMA:
                raise UsageError(f"--out {self.path}: {MANIFEST} is not a parity manifest; choose another --out")
            why = _manifest_problem(old)
            if why:
                raise UsageError(f"--out {self.path}: {MANIFEST} is malformed ({why}); this folder is not a run parity can "
                                 "continue or replace: remove it or choose another --out")
            if old.get("kind") != self.kind or old.get("run_key") != self.run_key:
                if self.resume or not self.replace:
                    what = old.get("describe") or {}
                    raise UsageError(f"--out {self.path}: holds another {old.get('kind')} run "
                                     f"({', '.join(f'{k} {v}' for k, v in what.items()) or 'different settings'}); "
                                     "choose another --out, or --overwrite to replace it (results of different runs are never mixed)")
                self._remove_run(old)
                old = None
        else:
            foreign = sorted(n.name for n in self.path.iterdir() if n.name not in OWN and not n.name.startswith("."))
            if foreign or any((self.path / "parts").iterdir()):
                raise UsageError(f"--out {self.path}: the folder has files that no parity run here made ({', '.join(foreign[:3]) or 'parts/'}); "
                                 "choose an empty or new --out")
            if self.resume:
                raise UsageError(f"--resume: {self.path} has no run to resume")
        now = datetime.now(timezone.utc).isoformat()
        self.manifest = {"schema": SCHEMA, "kind": self.kind, "run_key": self.run_key, "describe": self.describe,
                         "created": (old or {}).get("created", now), "status": "running", "parts": (old or {}).get("parts", {}),
                         "extra": (old or {}).get("extra", {})}
        self._save()

    def _remove_run(self, old: dict) -> None:
        """Delete what the old run's manifest says it wrote, nothing else."""
        for entry in old.get("parts", {}).values():
            for name in entry.get("files", {}).values():
                (self.path / "parts" / Path(name).name).unlink(missing_ok=True)
        for name in old.get("files", []) + [MARKER, MANIFEST]:
            target = self.path / Path(name).name
            if target.is_file():
                target.unlink()

    def _write_marker(self) -> None:
        atomic.write_json(self.path / MARKER, {"pid": os.getpid(), "host": socket.gethostname(),
                                               "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    def _save(self) -> None:
        atomic.write_json(self.path / MANIFEST, self.manifest)

    # -- parts ----------------------------------------------------------------------------------------
    def part_files(self, unit: str, suffixes: tuple[str, ...]) -> dict[str, Path]:
        stem = part_stem(unit)
        return {s: self.path / "parts" / f"{stem}{s}" for s in suffixes}

    def finished(self, unit: str, key: str) -> dict[str, Path] | None:
        """The files of `unit` if the manifest holds a finished part with this content key and every
        file is verified (part_problem); a part that fails is said in one line and left to recompute."""
        entry = self.manifest["parts"].get(unit)
        if not entry or entry.get("key") != key:
            return None
        names, shas = entry.get("files"), entry.get("sha256") or {}
        bad = [f for f in names.values() if not plain_name(f)] if isinstance(names, dict) else [names]
        if bad or not isinstance(shas, dict):
            log.warning("%s: the manifest's part of %s names %r, not a file of parts/: recomputed", self.path, unit, (bad or [shas])[0])
            return None
        files = {s: self.path / "parts" / f for s, f in names.items()}
        seen = self._verified.get((unit, key))
        if seen is not None and seen == _stats(files.values()):
            return files
        for s, f in files.items():
            problem = part_problem(f, unit, key, shas.get(s))
            if problem:
                log.warning("%s: part of %s %s: recomputed", f, unit, problem)
                return None
        if (stats := _stats(files.values())) is not None:
            self._verified[(unit, key)] = stats
        return files

    def add(self, unit: str, key: str, files: dict[str, Path]) -> None:
        """Record a part whose files are written (atomically) and complete, with each file's sha256."""
        self.manifest["parts"][unit] = {"key": key, "files": {s: Path(f).name for s, f in files.items()},
                                        "sha256": {s: sha256_file(f) for s, f in files.items()},
                                        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._save()

    def forget(self, unit: str) -> None:
        self._verified = {uk: v for uk, v in self._verified.items() if uk[0] != unit}
        if self.manifest["parts"].pop(unit, None) is not None:
            self._save()

    def remember(self, name: str, value) -> None:
        """Run-wide facts a resumed run needs without redoing the work (runner provenance, say)."""
        self.manifest["extra"][name] = value
        self._save()

    def recall(self, name: str, default=None):
        return self.manifest["extra"].get(name, default)

    def finish(self, files: list[str]) -> None:
        """The final tables and summary are written: the run is complete and readable."""
        shas = {f: sha256_file(self.path / f) for f in files if plain_name(f) and (self.path / f).is_file()}
        self.manifest.update(status="complete", files=files, file_sha256=shas, finished=datetime.now(timezone.utc).isoformat())
        self._save()
        (self.path / MARKER).unlink(missing_ok=True)


def _stats(files) -> dict[Path, tuple[int, int]] | None:
    """Each file's (size, mtime_ns), or None when one is missing."""
    try:
        return {f: (st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]}
    except OSError:
        return None
