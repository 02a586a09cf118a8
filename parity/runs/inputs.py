"""What a run reads before it starts: every case validated up front, pipelines by name or file, captures, a run id."""
from __future__ import annotations

import collections
import os
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


# Cases loaded (and checked) in this process, by absolute path and content hash: the run that loaded
# them up front, and each unit since, hands them to the units that follow instead of reading and checking
# every frame file again (a rank's unit is one case x condition: each case was loaded ~30 times a rank,
# a fifth of what adding a checkpoint cost). The content hash is the run's own, so a long-lived worker
# (Ray) never takes a case whose files changed since; the oldest are dropped beyond _KEPT_CASES.
_KEPT_CASES = 32
_CASES: collections.OrderedDict = collections.OrderedDict()


def case_ref(case: Case) -> dict:
    """How a unit's payload names its case: the absolute path and the content hash this run found."""
    return {"case": os.path.abspath(case.root), "case_sha256": case.content_hash()}


def case_key(path: str, sha256: str) -> tuple:
    """The key a case is kept under: its absolute path and the run's content hash of it."""
    return os.path.abspath(path), sha256


def keep_cases(cases: list[Case]) -> None:
    """Hand the cases this run loaded to the units it runs in this process (the serial executor)."""
    for c in cases:
        _keep(case_key(c.root, c.content_hash()), c)


def unit_case(path: str, sha256: str) -> Case:
    """The case at `path` whose content hash the run found to be `sha256`: kept from the run or an
    earlier unit in this process, else loaded and checked here (and kept for the next unit)."""
    key = case_key(path, sha256)
    case = _CASES.get(key)
    if case is None:
        case = load_case(path)
        if case.content_hash() != sha256:
            raise CaseError([f"{case.root}: its files changed while the run was using them; run the command again"])
    _keep(key, case)
    return case


def _keep(key: tuple, case: Case) -> None:
    _CASES[key] = case
    _CASES.move_to_end(key)
    while len(_CASES) > _KEPT_CASES:
        _CASES.popitem(last=False)


def load_captures(specs: list[str], taken: list[str], pipelines) -> list:
    """Every --outputs capture, read and checked up front: names unique, each covering a pipeline of the run."""
    from ..provenance import sha256_json
    from ..runners.captures import CaptureSpec, load_capture

    out = []
    shas = {sha256_json(p.to_dict()) for p in pipelines}
    for s in specs:
        spec = CaptureSpec.parse(s).absolute()
        if spec.name in taken or spec.name in [c.name for c in out]:
            raise UsageError(f"--outputs {s!r}: the name {spec.name!r} is already a runner of this run")
        cap = load_capture(spec)
        if not shas & {b.pipeline_sha256 for b in cap.manifest.batches}:
            have = sorted({b.pipeline for b in cap.manifest.batches})
            raise UsageError(f"{cap.path}: made on pipeline(s) {', '.join(have)} whose spec is none of this run's "
                             f"({', '.join(p.name for p in pipelines)}); export the inputs with this run's pipeline")
        out.append(cap)
    return out
