"""Which case folders a command means: paths, glob patterns, folders of cases and suite names.

Suite names resolve under $PARITY_CASES_DIR (default ./cases), where `parity cases generate`
renders them; a suite that is known but not rendered yet gets the command that renders it.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CaseError
from .format import CASE_FILE, is_case_dir
from .suites import SUITES


def _cases_below(folder: Path) -> list[Path]:
    """Case folders anywhere under `folder` (a case's own subfolders are not searched), sorted."""
    out = []
    for child in sorted(c for c in folder.iterdir() if c.is_dir()):
        out.extend([child] if is_case_dir(child) else _cases_below(child))
    return out


def cases_dir() -> Path:
    """Where suite names resolve: $PARITY_CASES_DIR, else ./cases."""
    return Path(os.environ.get("PARITY_CASES_DIR", "cases"))


def _expand(arg: str) -> tuple[list[Path], str | None]:
    """A path, a glob pattern, or a suite name -> candidate paths (or a problem)."""
    import glob

    p = Path(arg)
    if p.exists():
        return [p], None
    if glob.has_magic(arg):
        hits = [Path(h) for h in sorted(glob.glob(arg)) if Path(h).is_dir()]
        return hits, None if hits else f"{arg}: no folder matches this pattern"
    if arg in SUITES:
        suite = cases_dir() / arg
        if suite.is_dir():
            return [suite], None
        return [], f"{arg}: suite not generated yet (run: parity cases generate --suite {arg} --out {suite})"
    return [], f"{arg}: no such file or directory"


def find_cases(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand paths, glob patterns and suite names to case folders: a case folder itself, or a folder of cases."""
    found: list[Path] = []
    missing: list[str] = []
    expanded = []
    for arg in map(str, paths):
        hits, problem = _expand(arg)
        if problem:
            missing.append(problem)
        expanded.extend(hits)
    for p in expanded:
        if not p.exists():
            missing.append(f"{p}: no such file or directory")
        elif is_case_dir(p):
            found.append(p)
        elif p.is_dir():
            children = _cases_below(p)
            if not children:
                missing.append(f"{p}: neither a case folder (no {CASE_FILE}) nor a folder of cases")
            found.extend(children)
        else:
            missing.append(f"{p}: not a folder")
    if missing:
        raise CaseError(missing)
    return list(dict.fromkeys(found))
