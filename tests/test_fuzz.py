"""Property-based fuzzing (hypothesis) of everything parity reads from a file: case.json, pipeline
files, checkpoint sidecars and `parity score` input. Any mutation gives either a valid result or one
of parity's own errors (a clear message naming the file), never another exception, and a case that
loads can never name a file outside its folder."""
from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity.errors import ParityError

from .conftest import _tiny_scenario

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# JSON values a hostile or careless file may hold where something else was expected.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "..", "../../x", "/etc/passwd", "a/b", "nv12", "bt709", "limited", "bilinear", "\x00", "x" * 300, "0"]),
    st.text(max_size=12),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _paths(obj, prefix=()):
    """Every (path, value) of a JSON document."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw, doc):
    """`doc` with 1-3 mutations: a value replaced by an arbitrary one, or a key deleted, or a key added."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(values)
        else:
            parent[path[-1]] = draw(values)
    return doc


# ---- case.json ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_case():
    from parity.cases.synth import write_case

    root = Path(tempfile.mkdtemp(prefix="parity-fuzz-case-"))
    src = write_case(_tiny_scenario("fz", frames=3), root / "src")
    yield src
    shutil.rmtree(root, ignore_errors=True)


def test_mutated_case_json_loads_or_is_refused_clearly(fuzz_case):
    from parity.cases.format import load_case, name_problem

    base = json.loads((fuzz_case / "case.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="parity-fuzz-work-"))
    case_dir = work / "case"
    shutil.copytree(fuzz_case, case_dir)

    @FUZZ
    @given(mutated(base))
    def check(meta):
        (case_dir / "case.json").write_text(json.dumps(meta, allow_nan=True))
        try:
            case = load_case(case_dir)
        except ParityError as exc:
            assert str(exc) and "case.json" in str(exc) or str(case_dir) in str(exc)
            return
        assert name_problem(case.name) is None
        root = case_dir.resolve()
        for entry in case.frame_files:
            for rel in entry.values():
                assert (case_dir / rel).resolve().is_relative_to(root)
        case.content_hash()
        for i in range(len(case)):  # every frame it says it has can be read, named and fed to the model
            case.read(i, case.streams[0])
            case.export_name(i)
        from parity.metrics.lateral import metres_per_pixel
        from parity.models.rowanchor import RowAnchorAdapter

        adapter = RowAnchorAdapter()
        for pipe in adapter.pipelines().values():
            try:
                pipe.prepare(case, [0])
            except ParityError:
                pass  # e.g. a stream the pipeline does not read: said with the case's path
        metres_per_pixel(case.meta.get("camera"), adapter.anchor_rows(case.height), case.width)

    try:
        check()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- pipeline files -------------------------------------------------------------------------------

def test_mutated_pipeline_files_load_and_run_or_are_refused_clearly():
    from parity.errors import UsageError
    from parity.preprocessing.pipeline import Pipeline, vehicle_pipeline

    base = vehicle_pipeline().to_dict()
    rgb = np.random.default_rng(0).integers(0, 256, (1, 72, 128, 3), dtype=np.uint8)

    @FUZZ
    @given(mutated(base))
    def check(spec):
        try:
            pipe = Pipeline.from_dict(spec, where="p.json")
        except UsageError as exc:
            assert str(exc).startswith("p.json: ")
            return
        try:
            x = pipe.apply(rgb)
        except UsageError:
            return  # a window the frame cannot provide, said as such
        assert x.shape[0] == 1 and np.isfinite(x).all()

    check()


# ---- checkpoint sidecars --------------------------------------------------------------------------

def test_mutated_sidecars_load_or_are_refused_clearly(random_checkpoint, tmp_path_factory):
    from parity.models.checkpoint import load_checkpoint

    base = json.loads(random_checkpoint.path.with_suffix(".json").read_text())
    folder = tmp_path_factory.mktemp("fuzz-ckpt")
    shutil.copy(random_checkpoint.path, folder / "m.pt")

    @FUZZ
    @given(mutated(base))
    def check(meta):
        (folder / "m.json").write_text(json.dumps(meta, allow_nan=True))
        try:
            ck = load_checkpoint(folder / "m.pt")
            ck.adapter()
            ck.build_model()
        except ParityError as exc:
            assert "m.json" in str(exc) or "m.pt" in str(exc) or str(folder) in str(exc)

    check()


# ---- parity score input ---------------------------------------------------------------------------

def test_mutated_score_input_scores_or_is_refused_clearly(fuzz_case, tmp_path_factory):
    from parity.cases.format import load_case
    from parity.metrics.external import match_predictions, read_tusimple_predictions, score_case

    case = load_case(fuzz_case)
    rows = [float(r) for r in case.anchor_rows]
    good = [{"raw_file": case.export_name(i), "lanes": [[float(x) if math.isfinite(x) else -2 for x in lane] for lane in case.gt[i]],
             "h_samples": rows, "run_time": 10} for i in range(len(case))]
    pred = tmp_path_factory.mktemp("fuzz-score") / "pred.json"

    @FUZZ
    @given(st.lists(st.one_of(mutated(good[0]), mutated(good[1]), st.just(good[2])), min_size=0, max_size=4),
           st.one_of(st.none(), st.binary(max_size=40)))
    def check(lines, junk):
        text = "\n".join(json.dumps(r, allow_nan=True) for r in lines).encode()
        pred.write_bytes(text + (b"\n" + junk if junk else b""))
        try:
            recs = read_tusimple_predictions(pred)
            matched = match_predictions([case], recs, pred)
            for name, items in matched["frames"].items():
                res = score_case(case, items)
                assert 0 <= res["accuracy"] <= 1
        except ParityError as exc:
            assert str(pred) in str(exc) or str(case.root) in str(exc)

    check()
