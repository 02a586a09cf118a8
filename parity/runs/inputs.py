"""What a run reads before it starts: every case validated up front, pipelines by name or file, a run id."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone

from ..cases.discovery import find_cases
from ..cases.format import Case, load_case
from ..errors import CaseError, UsageError


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def resolve_pipeline(name: str, available: dict):
    """A pipeline of the model by name, or a pipeline file (.json/.toml)."""
    from ..preprocessing.pipeline import load_pipeline

    if name in available:
        return available[name]
    if name.endswith((".json", ".toml")):
        return load_pipeline(name)
    raise UsageError(f"unknown pipeline {name!r} (this model has: {', '.join(available)}; or give a .json/.toml file)")


def load_all_cases(paths: list[str]) -> list[Case]:
    """Every case, validated up front; all problems of all cases are reported together."""
    problems, cases = [], []
    for p in find_cases(paths):
        try:
            cases.append(load_case(p))
        except CaseError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CaseError(problems)
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CaseError([f"case name {n!r} is used by more than one case folder" for n in dupes])
    return cases
