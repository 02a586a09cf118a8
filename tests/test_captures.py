"""Outputs computed elsewhere come back in: export-inputs, captures in every format, refusals, and the
checks only a capture allows (batch invariance, realised precision).

The "engine" here is ONNX Runtime on parity's own fp16 graph, run by real Polygraphy, by a writer of
trtexec's files that follows trtexec's source (tests/trtexec_files.py) and by the capture script on
the TensorRT test double: every capture must give what parity's own `ort-fp16` runner gives.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parity.cases.format import load_case
from parity.errors import UsageError
from parity.models.checkpoint import load_checkpoint
from parity.runners.captures import CaptureSpec, load_capture
from parity.runners.captures.manifest import read_manifest, row_hashes

from . import fake_tensorrt, trtexec_files
from .conftest import run_cli, run_main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "checkpoints" / "reference.pt"
BATCH = 4  # the tiny case's 6 frames: batches of 4 and 2, and a probe of 4
COMPARED = ("dx_ref_mean_px", "dx_ref_p99_px", "dx_ref_max_px", "argmax_flip_rate", "raw_max", "raw_p99", "raw_mean", "raw_cosine_min",
            "accuracy", "f1_50", "bend_mean_px", "bend_p99_px", "kink_rate", "jitter_rms_near", "jitter_rms_mid", "jitter_rms_far",
            "added_bend_mean_px", "added_bend_p99_px", "added_jitter_rms_near", "added_flicker_hz", "nonfinite_rate")


def polygraphy() -> str:
    exe = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))
    assert Path(exe).exists(), "polygraphy is in the test extra (pip install -e '.[test]')"
    return exe


@pytest.fixture(scope="module")
def cases(tiny_case, tmp_path_factory):
    d = tmp_path_factory.mktemp("capture-cases")
    shutil.copytree(tiny_case, d / "tiny")
    return d


@pytest.fixture(scope="module")
def export(cases, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "exp"
    res = run_cli("export-inputs", "--cases", cases, "--checkpoint", REFERENCE, "--format", "polygraphy", "--batch-size", BATCH,
                  "--invariance-probe", "--cache-dir", cache_dir, "--out", out)
    assert res.returncode == 0, res.stderr
    return out


def ort_engine(export: Path, graph="model.fp16.onnx"):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(export / graph), providers=["CPUExecutionProvider"])
    return lambda x: dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))


def batch_inputs(export: Path) -> dict:
    """batch id -> input tensor, read back from the Polygraphy feed file (through Polygraphy's own format)."""
    from parity.runners.captures.polygraphy_json import read_json

    m = read_manifest(export)
    feeds = read_json(export / "inputs.polygraphy.json")
    return {b.id: feeds[b.tensor["index"]][m.input_name] for b in m.batches}


@pytest.fixture(scope="module")
def poly_out(export):
    res = subprocess.run([polygraphy(), "run", str(export / "model.fp16.onnx"), "--onnxrt", "--load-inputs", str(export / "inputs.polygraphy.json"),
                          "--save-outputs", str(export / "out.json")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return export / "out.json"


@pytest.fixture(scope="module")
def trtexec_raw(export, tmp_path_factory):
    engine, m = ort_engine(export), read_manifest(export)
    root = tmp_path_factory.mktemp("raw")
    for bid, x in batch_inputs(export).items():
        trtexec_files.dump_raw_bindings(root / bid, {m.input_name: x}, engine(x))
    return root


@pytest.fixture(scope="module")
def trtexec_json(export, tmp_path_factory):
    engine = ort_engine(export)
    root = tmp_path_factory.mktemp("exportOutput")
    for bid, x in batch_inputs(export).items():
        trtexec_files.export_output(root / f"{bid}.json", engine(x))
    return root


def capture_with_double(monkeypatch, export: Path, out: Path, graph="model.fp16.onnx", precision="fp16", variant=None, edit=None,
                        debug=False):
    """The capture script, run as the user runs it on the target, against the TensorRT test double."""
    from parity.runners.tensorrt_runner import BuildOptions, build_engine

    trt, _ = fake_tensorrt.install(monkeypatch)
    trt.batch_variant = variant
    m = read_manifest(export)
    plan, _ = build_engine(trt, (export / graph).read_bytes(), m.input_name, m.batches[0].tensor["shape"][1:], BuildOptions("fp16"))
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "model.plan").write_bytes(plan)
    src = export
    if edit is not None:  # a copy of the export whose inputs are changed before the capture
        src = out.parent / "edited-export"
        shutil.copytree(export, src)
        edit(src)
    script = {}
    exec(compile((export / "capture_trt.py").read_text(), "capture_trt.py", "exec"), script)
    script["main"](["--engine", str(out.parent / "model.plan"), "--inputs", str(src), "--out", str(out), "--precision", precision]
                   + (["--debug-tensors"] if debug else []))
    return out


@pytest.fixture(scope="module")
def script_capture(export, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        yield capture_with_double(mp, export, tmp_path_factory.mktemp("script") / "capture")
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def replayed(cases, export, poly_out, trtexec_raw, trtexec_json, script_capture, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("capture-run") / "run"
    res = run_main("replay", "--cases", cases, "--checkpoint", REFERENCE, "--runners", "torch,ort-fp16", "--batch-size", BATCH,
                  "--outputs", f"poly-fp16={poly_out}", "--outputs", f"raw-fp16={trtexec_raw},inputs={export}",
                  "--outputs", f"json-fp16={trtexec_json},inputs={export}", "--outputs", f"trt-fp16={script_capture}",
                  "--cache-dir", cache_dir, "--out", out, "--no-progress")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res.stdout


def _results(run: Path) -> dict:
    return {r["runner"]: r for r in json.loads((run / "summary.json").read_text())["results"]}


def test_export_writes_what_replay_feeds_in_each_format(cases, cache_dir, tmp_path):
    """Every batch's file holds exactly the tensor replay prepares for those frames (computed here
    independently), its hashes in inputs.json; trtexec raw files are bare little-endian bytes."""
    ck = load_checkpoint(REFERENCE)
    case = load_case(cases / "tiny")
    pipe = ck.adapter().pipelines()["vehicle"]
    for fmt in ("trtexec", "npy"):
        out = tmp_path / fmt
        res = run_main("export-inputs", "--cases", cases, "--checkpoint", REFERENCE, "--format", fmt, "--batch-size", BATCH,
                      "--graphs", "none", "--cache-dir", cache_dir, "--out", out)
        assert res.returncode == 0, res.stderr
        m = read_manifest(out)
        assert [b.frames for b in m.batches] == [[0, 1, 2, 3], [4, 5]]
        for b in m.batches:
            want = pipe.prepare(case, b.frames)
            f = out / b.tensor["file"]
            got = np.load(f) if fmt == "npy" else np.fromfile(f, dtype="<f4").reshape(b.tensor["shape"])
            np.testing.assert_array_equal(got, want)
            assert b.frame_sha256 == row_hashes(want) and b.tensor["shape"] == list(want.shape) and b.tensor["dtype"] == "float32"
        assert (out / "capture_trt.py").is_file() and "import parity" not in (out / "capture_trt.py").read_text()


def test_polygraphy_load_inputs_file_is_read_by_polygraphy_itself(export):
    from polygraphy.json import load_json

    feeds = load_json(str(export / "inputs.polygraphy.json"))
    mine = batch_inputs(export)
    m = read_manifest(export)
    assert len(feeds) == len(m.batches) == 3 and m.batches[2].kind == "invariance"
    for b in m.batches:
        np.testing.assert_array_equal(feeds[b.tensor["index"]][m.input_name], mine[b.id])


@pytest.mark.parametrize("runner", ["poly-fp16", "raw-fp16", "trt-fp16"])
def test_capture_equals_parity_own_ort_fp16(replayed, runner):
    """Polygraphy's run of parity's fp16 ONNX, trtexec's raw bindings and the capture script (test
    double) give every metric of parity's own ort-fp16 runner, frame by frame."""
    import pandas as pd

    run, _ = replayed
    res = _results(run)
    for k in COMPARED:
        a, b = res["ort-fp16"].get(k), res[runner].get(k)
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-6, nan_ok=True), k
    t = pd.read_parquet(run / "frames.parquet")
    mine, ort = (t[t.runner == n].sort_values(["frame", "lane"]).reset_index(drop=True) for n in (runner, "ort-fp16"))
    cols = ["dx_ref_mean_px", "dx_ref_max_px", "raw_max", "raw_mean", "argmax_flip_rate", "added_bend_px", "bend_px"]
    np.testing.assert_allclose(mine[cols].to_numpy(dtype=float), ort[cols].to_numpy(dtype=float), atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(np.stack(mine["x"].to_numpy()).astype(float), np.stack(ort["x"].to_numpy()).astype(float), atol=1e-6,
                               equal_nan=True)


def test_export_output_json_is_read_and_said_to_be_lossy(replayed):
    """6 significant digits: the lanes agree with ort-fp16 to well under a pixel, and the label says what was rounded."""
    run, stdout = replayed
    res = _results(run)
    assert "6 significant digits" in res["json-fp16"]["label"]
    assert res["json-fp16"]["dx_ref_mean_px"] == pytest.approx(res["ort-fp16"]["dx_ref_mean_px"], abs=1e-3)
    assert res["json-fp16"]["argmax_flip_rate"] == pytest.approx(res["ort-fp16"]["argmax_flip_rate"], abs=1e-3)


def test_provenance_of_a_capture_reaches_summary_and_baseline(replayed, tmp_path):
    run, _ = replayed
    summary = json.loads((run / "summary.json").read_text())
    info = summary["provenance"]["runners"]["trt-fp16"]
    assert info["backend"] == "capture" and info["tensorrt"] == "10.9.0" and info["gpu"] == "Fake GPU"
    assert info["precision_claimed"] == "fp16" and len(info["engine"]["sha256"]) == 64
    assert info["layer_precisions"]["fp16"] > 0
    assert summary["findings"] == []
    base = tmp_path / "base.json"
    assert run_main("baseline", "--run", run, "--out", base).returncode == 0
    doc = json.loads(base.read_text())
    assert doc["provenance"]["runners"]["trt-fp16"]["engine"]["sha256"] == info["engine"]["sha256"]
    probe = [e for e in doc["entries"] if e["runner"] == "trt-fp16" and e["case"] == "tiny"]
    assert probe and probe[0]["batch_variance_dx_max_px"] == 0.0
    from parity.decisions.report import write_report

    html = write_report(run).read_text()
    assert "Captured on a target" in html and info["engine"]["sha256"][:12] in html and "Fake GPU" in html


def test_capture_script_debug_tensors_reach_localize(monkeypatch, export, cache_dir, tmp_path):
    """The capture script's --debug-tensors (the double hands every intermediate value to its debug
    listener, as TensorRT does for debug tensors) writes trtexec's layout; localize --capture maps it."""
    from parity.runners.artifacts import ArtifactCache
    from parity.runs.localize_capture import localize_capture

    cap = capture_with_double(monkeypatch, export, tmp_path / "capture", debug=True)
    assert (cap / "debug" / "batch_0001" / "tensor_summary.json").is_file()
    with pytest.raises(UsageError, match="give the export folder with --inputs"):  # the capture holds outputs, not the inputs
        localize_capture(load_checkpoint(REFERENCE), str(cap), batch="batch_0001", search=False, cache=ArtifactCache(cache_dir))
    res = localize_capture(load_checkpoint(REFERENCE), str(cap), inputs=str(export), batch="batch_0001", search=False,
                           cache=ArtifactCache(cache_dir))
    assert res["format"] == "trtexec-debug-tensors" and res["frames"] == [4, 5] and res["compared"] >= 10
    assert res["first_diverging"] is None  # onnxruntime's CPU provider computes the fp16 graph in fp32: rounding only


def test_a_changed_frame_is_refused_naming_it(cases, export, poly_out, cache_dir, tmp_path):
    broken = tmp_path / "cases"
    shutil.copytree(cases, broken)
    f = sorted((broken / "tiny" / "frames").iterdir())[3]
    data = bytearray(f.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 4000] = bytes(4000)  # a black band in frame 3
    f.write_bytes(bytes(data))
    res = run_main("replay", "--cases", broken, "--checkpoint", REFERENCE, "--runners", "torch", "--batch-size", BATCH,
                  "--outputs", f"poly-fp16={poly_out}", "--cache-dir", cache_dir, "--out", tmp_path / "run", "--no-progress", "--no-report")
    assert res.returncode == 2, res.stderr
    assert "case tiny frame 3" in res.stdout and "differs from the one exported" in res.stdout, res.stdout[-1500:]
    assert "Traceback" not in res.stdout + res.stderr


def test_capture_of_an_altered_input_is_refused_naming_the_frame(monkeypatch, export, tmp_path):
    """The capture script records the hash of every row it fed: one altered frame is caught on reading."""
    from parity.runners.captures.polygraphy_json import encode_array

    def alter(folder):
        feeds = json.loads((folder / "inputs.polygraphy.json").read_text())
        m = read_manifest(folder)
        x = batch_inputs(folder)["batch_0000"].copy()
        x[2] += 0.5
        feeds[0][m.input_name] = encode_array(x)
        (folder / "inputs.polygraphy.json").write_text(json.dumps(feeds))

    cap = capture_with_double(monkeypatch, export, tmp_path / "capture", edit=alter)
    with pytest.raises(UsageError, match=r"batch batch_0000 was run on other inputs than the export: row 2 \(case tiny frame 2\)"):
        load_capture(CaptureSpec("trt-fp16", str(cap)))


def test_a_changed_output_file_is_refused(script_capture, tmp_path):
    cap = tmp_path / "cap"
    shutil.copytree(script_capture, cap)
    f = next((cap / "outputs").glob("batch_0001.*.npy"))
    a = np.load(f)
    a[0, 0, 0, 0] += 1
    np.save(f, a)
    with pytest.raises(UsageError, match="sha256 is not the one capture.json recorded"):
        load_capture(CaptureSpec("x", str(cap)))


def test_batch_variant_engine_fails_the_batch_invariance_rule(monkeypatch, cases, export, script_capture, cache_dir, tmp_path):
    """A healthy capture is the baseline; an engine computing the second half of a batch with another
    kernel (logits of rows >= 2 shifted by a few grid cells) moves the probe frame's lanes: the gate
    fails on batch_variance_dx_max_px and says so first."""
    healthy = tmp_path / "healthy"
    assert run_main("replay", "--cases", cases, "--checkpoint", REFERENCE, "--runners", "torch", "--batch-size", BATCH,
                   "--outputs", f"trt-fp16={script_capture}", "--cache-dir", cache_dir, "--out", healthy, "--no-progress",
                   "--no-report").returncode == 0
    base = tmp_path / "base.json"
    assert run_main("baseline", "--run", healthy, "--out", base).returncode == 0

    def variant(o):
        o = o.copy()
        o[2:, :-1] = np.roll(o[2:, :-1], 3, axis=1)  # the location cells; the last class is "no lane"
        return o

    bad = capture_with_double(monkeypatch, export, tmp_path / "variant" / "capture", variant=variant)
    res = run_main("gate", "--baseline", base, "--outputs", f"trt-fp16={bad}", "--cache-dir", cache_dir, "--batch-size", BATCH,
                  "--out", tmp_path / "gate", "--no-progress", "--no-report")
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    doc = json.loads((tmp_path / "gate" / "gate.json").read_text())
    failed = {(c["rule"], c["runner"]) for c in doc["checks"] if c["status"] == "fail"}
    assert ("batch_variance_dx_max_px", "trt-fp16") in failed
    probe = next(c for c in doc["checks"] if c["rule"] == "batch_variance_dx_max_px" and c["case"] == "tiny" and c["runner"] == "trt-fp16")
    assert 1.0 < probe["measured"] < 1e3, probe["message"]
    # the same gate on the healthy capture passes: the rule is what failed, not the gate's plumbing
    ok = run_main("gate", "--baseline", base, "--outputs", f"trt-fp16={script_capture}", "--cache-dir", cache_dir, "--batch-size", BATCH,
                 "--out", tmp_path / "gate-ok", "--no-progress", "--no-report")
    assert ok.returncode == 0, ok.stdout[-2000:]


def test_gate_needs_the_capture_a_baseline_runner_came_from(replayed, tmp_path):
    run, _ = replayed
    base = tmp_path / "base.json"
    assert run_main("baseline", "--run", run, "--out", base).returncode == 0
    res = run_main("gate", "--baseline", base, "--out", tmp_path / "g", "--no-progress")
    assert res.returncode == 2 and "were captures on a target" in res.stderr and "--outputs" in res.stderr


def test_fp16_claim_with_fp32_outputs_is_flagged(monkeypatch, cases, export, cache_dir, tmp_path):
    """An "fp16" capture bit-identical to the fp32 one, and an "fp16" engine whose inspector lists no
    fp16 layer (built from the fp32 graph), are findings: exit 1."""
    engine32, m = ort_engine(export, "model.onnx"), read_manifest(export)
    outs = {b.id: engine32(x)[m.output_name] for b, x in zip(m.batches, batch_inputs(export).values())}
    np.savez(tmp_path / "fp32.npz", **outs)
    fake16 = capture_with_double(monkeypatch, export, tmp_path / "c16" / "capture", graph="model.onnx", precision="fp16")
    res = run_main("replay", "--cases", cases, "--checkpoint", REFERENCE, "--runners", "torch", "--batch-size", BATCH,
                  "--outputs", f"trt-fp32={tmp_path / 'fp32.npz'},inputs={export}",
                  "--outputs", f"dup={tmp_path / 'fp32.npz'},inputs={export},precision=fp16",
                  "--outputs", f"trt-fp16={fake16}", "--cache-dir", cache_dir, "--out", tmp_path / "run", "--no-progress", "--no-report")
    assert res.returncode == 1, res.stderr[-2000:]
    findings = json.loads((tmp_path / "run" / "summary.json").read_text())["findings"]
    assert any("dup is claimed fp16 (by --outputs precision=)" in f and "bit-identical to trt-fp32" in f for f in findings), findings
    assert any("trt-fp16 is claimed fp16" in f and "no fp16 layer" in f for f in findings), findings
    assert not any(f.startswith("capture trt-fp32") for f in findings)


@pytest.mark.parametrize("spec, message", [
    ("x", "NAME=PATH"),
    ("x=/nope.json", "no such capture"),
    ("x={poly},colour=red", "unknown option"),
    ("x={poly},precision=fp12", "precision must be one of"),
    ("torch={poly}", "already a runner"),
])
def test_bad_outputs_specs_get_one_line(replayed, poly_out, cases, tmp_path, spec, message):
    res = run_main("replay", "--cases", cases, "--checkpoint", REFERENCE, "--runners", "torch", "--outputs", spec.format(poly=poly_out),
                  "--out", tmp_path / "r", "--no-progress")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_foreign_or_broken_files_are_refused_clearly(export, tmp_path):
    (tmp_path / "inputs.json").write_text((export / "inputs.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lst": [["r", [{"outputs": {"logits": {"array": "!!notbase64", "polygraphy_class": "ndarray"}},
                                                "polygraphy_class": "IterationResult"}]]], "polygraphy_class": "RunResults"}))
    with pytest.raises(UsageError, match="not a valid base64 np.save payload"):
        load_capture(CaptureSpec("x", str(bad)))
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"lst": [["r", []]], "polygraphy_class": "RunResults"}))
    with pytest.raises(UsageError, match="0 iterations, but .* has 3 batches"):
        load_capture(CaptureSpec("x", str(short)))
    (tmp_path / "f.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable .npz"):
        load_capture(CaptureSpec("x", str(tmp_path / "f.npz")))
    lonely = tmp_path / "elsewhere"
    lonely.mkdir()
    (lonely / "o.npy").write_bytes(b"")
    (tmp_path / "inputs.json").unlink()
    with pytest.raises(UsageError, match="no inputs.json in it or beside it"):
        load_capture(CaptureSpec("x", str(lonely / "o.npy")))


def test_export_output_parser_reads_trtexec_text_with_nan_and_inf(tmp_path):
    from parity.runners.captures.trtexec import parse_export_output

    a = np.array([[1.23456789, -2.5e-05, np.nan], [np.inf, -np.inf, 3.0]], dtype=np.float32)
    trtexec_files.export_output(tmp_path / "o.json", {"out/0": a})
    got = parse_export_output((tmp_path / "o.json").read_text(), "o.json")["out/0"]
    assert got.shape == (2, 3) and np.isnan(got[0, 2]) and got[1, 0] == np.inf and got[1, 1] == -np.inf
    assert got[0, 0] == pytest.approx(1.23457, abs=1e-6) and got[0, 1] == pytest.approx(-2.5e-05)


def test_sweep_takes_a_capture_of_perturbed_inputs(cases, cache_dir, tmp_path):
    """export-inputs --perturb writes what the sweep feeds under each perturbation x severity; the
    engine's outputs of them (an .npz) give the sweep the same figures as parity's own ort-fp16."""
    exp = tmp_path / "exp"
    res = run_main("export-inputs", "--cases", cases, "--checkpoint", REFERENCE, "--format", "npy", "--batch-size", BATCH,
                  "--perturb", "crop_shift_x,channel_swap", "--severities", "1,3", "--graphs", "fp16", "--cache-dir", cache_dir, "--out", exp)
    assert res.returncode == 0, res.stderr
    m, engine = read_manifest(exp), ort_engine(exp)
    assert {(b.perturbation, b.severity) for b in m.batches} == {("none", 0), ("crop_shift_x", 1), ("crop_shift_x", 3),
                                                                  ("channel_swap", 1), ("channel_swap", 3)}
    np.savez(tmp_path / "out.npz", **{b.id: engine(np.load(exp / b.tensor["file"]))[m.output_name] for b in m.batches})
    res = run_main("sweep", "--cases", cases, "--checkpoint", REFERENCE, "--runners", "torch,ort-fp16", "--perturb", "crop_shift_x,channel_swap",
                  "--severities", "1,3", "--window-s", "0", "--batch-size", BATCH, "--outputs", f"cap-fp16={tmp_path / 'out.npz'},inputs={exp}",
                  "--cache-dir", cache_dir, "--out", tmp_path / "sweep", "--no-progress")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = json.loads((tmp_path / "sweep" / "summary.json").read_text())["results"]
    by = {(r["runner"], r["perturbation"], r["severity"]): r for r in rows}
    keys = [k[1:] for k in by if k[0] == "ort-fp16"]
    assert len(keys) == 5
    for k in keys:
        a, b = by[("ort-fp16", *k)], by[("cap-fp16", *k)]
        for metric in ("dx_ref_mean_px", "dx_ref_p99_px", "argmax_flip_rate", "accuracy", "raw_max"):
            assert a.get(metric) == pytest.approx(b.get(metric), abs=1e-6, nan_ok=True), (k, metric)
