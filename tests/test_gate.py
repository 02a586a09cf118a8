"""`parity baseline` and `parity gate`: identical runs pass, planted regressions fail with the right rule
named, every fail-closed reason fails with its own reason, tolerances matter, and the JUnit file is
what CI systems read (validated against tests/junit.xsd)."""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from parity.decisions import gate as G
from parity.decisions.baseline import load_baseline, read_replay
from parity.errors import UsageError

from .conftest import _tiny_scenario, rerecord_run, run_cli, run_main
from .defects import plant_overflow

XSD = Path(__file__).with_name("junit.xsd")
RUNNERS = "torch,cpu-fp16"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three small cases, a model fitted to them, a replay of it and the baseline made from that replay."""
    from parity.cases.synth import write_case
    from parity.training.loop import train

    root = tmp_path_factory.mktemp("gate")
    cases = [write_case(_tiny_scenario(f"g{i}", seed=20 + i), root / "cases" / f"g{i}") for i in range(3)]
    fitted = train([str(c) for c in cases], root / "fit.pt", epochs=12, batch_size=6, lr=3e-3, progress=False)
    cache = root / "cache"
    run = root / "base-run"
    r = run_main("replay", "--cases", *cases, "--checkpoint", fitted.path, "--runners", RUNNERS, "--pipeline", "vehicle,training",
                 "--out", run, "--cache-dir", cache, "--no-progress", "--no-report")
    assert r.returncode == 0, r.stderr
    baseline = root / "baseline.json"
    r = run_main("baseline", "--run", run, "--out", baseline)
    assert r.returncode == 0, r.stderr
    return {"root": root, "cases": cases, "fitted": fitted, "cache": cache, "run": run, "baseline": baseline}


def _gate(world, out, *args):
    """parity gate in this process (the candidate's replay included); one test runs it as a command (exit code, stderr)."""
    return run_main("gate", "--baseline", world["baseline"], "--out", out, "--cache-dir", world["cache"], "--no-progress", "--no-report", *args)


def _doc(out) -> dict:
    return json.loads((Path(out) / "gate.json").read_text())


def _validate_junit(path: Path):
    import xmlschema

    xmlschema.XMLSchema(str(XSD)).validate(str(path))
    return ET.parse(path).getroot()


def _failing(doc, status="fail"):
    return {(c["case"], c["runner"], c["pipeline"], c["rule"]) for c in doc["checks"] if c["status"] == status}


def test_identical_run_passes_and_its_junit_validates(world, tmp_path):
    r = _gate(world, tmp_path / "g")  # replays the baseline's cases, checkpoint, runners and pipelines
    assert r.returncode == 0, r.stdout + r.stderr
    doc = _doc(tmp_path / "g")
    assert doc["verdict"] == "pass" and doc["counts"]["fail"] == doc["counts"]["error"] == 0
    base = load_baseline(world["baseline"])
    n_rules = len(G.load_rules())
    n_entries = len(base.entries)
    vehicle_entries = sum(k[2] == "vehicle" for k in base.entries)
    assert len(doc["checks"]) == n_entries * (n_rules - 1) + vehicle_entries  # the pipeline gap is a vehicle-only metric
    root = _validate_junit(tmp_path / "g" / "junit.xml")
    assert int(root.get("tests")) == len(doc["checks"]) and root.get("failures") == "0"
    assert "PASSED" in (tmp_path / "g" / "gate.md").read_text()
    assert "gate PASS" in r.stdout
    # --run on a finished replay gives the same verdict without replaying
    assert _gate(world, tmp_path / "g2", "--run", world["run"]).returncode == 0


def test_fragile_model_fails_on_its_fp16_runner_with_the_rule_named(world, tmp_path):
    bad = plant_overflow(world["fitted"], tmp_path / "overflow.pt")
    r = _gate(world, tmp_path / "g", "--checkpoint", bad.path)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = _doc(tmp_path / "g")
    fails = _failing(doc)
    assert ("g0", "cpu-fp16", "vehicle", "nonfinite_rate") in fails and ("*", "cpu-fp16", "training", "nonfinite_rate") in fails
    assert not {f for f in fails if f[1] == "torch"}  # fp32 is exact on the planted model: torch passes everything
    root = _validate_junit(tmp_path / "g" / "junit.xml")
    failed = [(tc.get("classname"), tc.get("name"), tc.find("failure").get("message")) for tc in root.iter("testcase")
              if tc.find("failure") is not None]
    hit = [f for f in failed if f[0] == "parity.gate.g0.cpu-fp16.vehicle" and f[1] == "nonfinite_rate"]
    assert hit and "measured 1" in hit[0][2] and "allowed <= 0" in hit[0][2] and "baseline 0" in hit[0][2]
    md = (tmp_path / "g" / "gate.md").read_text()
    assert "FAILED: regression" in md and "| fail | cpu-fp16 | nonfinite (deployment) |" in md
    lines = r.stdout.splitlines()
    # The first line names the runner and the deployment delta; the changed checkpoint is said before any group line.
    assert lines[0].startswith("gate FAIL (engine regression): model changed (checkpoint fit ") and "nonfinite_rate 1, allowed <= 0" in lines[0]
    assert lines[0].index("model changed") < lines[0].index("cpu-fp16 on ") < lines[0].index("nonfinite_rate")
    model = next(i for i, line in enumerate(lines) if "model changed: checkpoint fit" in line)
    assert model < next(i for i, line in enumerate(lines) if line.startswith("  FAIL "))
    assert "torch fp32 reference: unchanged" in r.stdout and not doc["reference_moved"]
    assert len(lines) < 20  # grouped: every single check is in junit.xml and gate.json, not in the log


def test_perturbed_vehicle_pipeline_fails(world, tmp_path):
    spec = json.loads((world["run"] / "summary.json").read_text())["provenance"]["pipelines"]["vehicle"]
    spec["crop_offset"] = [0, 24]  # an ROI 24 px off: the vehicle's crop from another camera's calibration
    shifted = tmp_path / "vehicle-shifted.json"
    shifted.write_text(json.dumps(spec))  # keeps name "vehicle": it stands for the vehicle pipeline
    r = _gate(world, tmp_path / "g", "--pipeline", f"training,{shifted}")
    assert r.returncode == 1, r.stdout + r.stderr
    fails = _failing(_doc(tmp_path / "g"))
    assert {f[2] for f in fails} == {"vehicle"}  # the training pipeline is untouched and passes
    assert {f[3] for f in fails} & {"accuracy", "pipeline_gap_p99_px", "bend_p99_px"}
    assert ("*", "torch", "vehicle", "pipeline_gap_p99_px") in fails
    first = r.stdout.splitlines()[0]
    assert first.startswith("gate FAIL (the model or its inputs changed, not the engine): torch fp32 moved: torch on vehicle")
    assert "pipeline vehicle differs: crop_offset [0, 0] -> [0, 24]" in r.stdout and _doc(tmp_path / "g")["reference_moved"]


@pytest.mark.parametrize("how, reason", [
    ("drop-case", "case-missing"),
    ("change-bytes", "case-bytes-changed"),
    ("drop-runner", "runner-did-not-run"),
    ("extra-runner", "baseline-entry-missing"),
])
def test_each_fail_closed_reason_end_to_end(world, tmp_path, how, reason):
    cases = [str(c) for c in world["cases"]]
    args = []
    if how == "drop-case":
        args = ["--cases", *cases[:2]]
    elif how == "change-bytes":
        copy = tmp_path / "cases"
        for c in world["cases"]:
            shutil.copytree(c, copy / c.name)
        frame = sorted((copy / "g1" / "frames").glob("*.nv12"))[2]
        data = bytearray(frame.read_bytes())
        data[100] ^= 1
        frame.write_bytes(bytes(data))
        args = ["--cases", *(str(copy / c.name) for c in world["cases"])]
    elif how == "drop-runner":
        args = ["--runners", "torch"]
    elif how == "extra-runner":
        args = ["--runners", RUNNERS + ",ort-fp32"]
    r = _gate(world, tmp_path / "g", *args)
    assert r.returncode == 3, (how, r.stdout, r.stderr)
    doc = _doc(tmp_path / "g")
    assert doc["verdict"] == "error" and doc["counts"]["fail"] == 0
    assert reason in {c["rule"] for c in doc["checks"] if c["status"] == "error"}
    assert reason in (tmp_path / "g" / "gate.md").read_text()
    root = _validate_junit(tmp_path / "g" / "junit.xml")
    assert any(e.get("type") == reason for e in root.iter("error"))
    if how in ("drop-case", "change-bytes"):
        assert "incomplete-overall" in {c["rule"] for c in doc["checks"]}  # the run-level figures are over other cases


def _edited_run(world, tmp_path, edit) -> Path:
    """A copy of the baseline's own replay with its summary edited: the candidate states the unit tests need."""
    run = tmp_path / "cand"
    shutil.copytree(world["run"], run)
    doc = json.loads((run / "summary.json").read_text())
    edit(doc)
    (run / "summary.json").write_text(json.dumps(doc))
    rerecord_run(run)
    return run


def _per_case(doc, case, runner, pipeline):
    return next(r for r in doc["per_case"] if (r["case"], r["runner"], r["pipeline"]) == (case, runner, pipeline))


def test_case_error_nan_and_fewer_frames_fail_closed(world, tmp_path):
    base = load_baseline(world["baseline"])
    rules = G.load_rules()

    def case_error(doc):
        doc["per_case"] = [r for r in doc["per_case"] if r["case"] != "g2"]
        doc["errors"] = [{"case": "g2", "error": "RuntimeError: frame 3 unreadable"}]

    checks = G.compare(base, read_replay(_edited_run(world, tmp_path / "a", case_error)), rules)
    assert {c.rule for c in checks if c.case == "g2"} == {"case-error"} and G.verdict(checks) == ("error", 3)
    assert "frame 3 unreadable" in next(c.message for c in checks if c.rule == "case-error")

    def nan(doc):
        _per_case(doc, "g0", "cpu-fp16", "vehicle")["bend_p99_px"] = None

    checks = G.compare(base, read_replay(_edited_run(world, tmp_path / "b", nan)), rules)
    bad = [c for c in checks if c.status != "pass"]
    assert [(c.case, c.runner, c.rule, c.status) for c in bad] == [("g0", "cpu-fp16", "bend_p99_px", "fail")]
    assert "absent (NaN)" in bad[0].message and G.verdict(checks) == ("fail", 1)

    def fewer(doc):
        _per_case(doc, "g1", "torch", "training")["frames"] = 4

    checks = G.compare(base, read_replay(_edited_run(world, tmp_path / "c", fewer)), rules)
    assert [(c.case, c.runner, c.pipeline, c.rule) for c in checks if c.status != "pass"] == [("g1", "torch", "training", "fewer-frames")]

    def fewer_case_frames(doc):
        doc["provenance"]["cases"]["g1"]["frames"] = 5

    checks = G.compare(base, read_replay(_edited_run(world, tmp_path / "d", fewer_case_frames)), rules)
    assert {c.rule for c in checks if c.case == "g1"} == {"fewer-frames"}


def test_absent_in_both_passes_only_where_nothing_was_labelled(world, tmp_path):
    base = load_baseline(world["baseline"])
    key = ("g0", "torch", "vehicle")
    base.entries[key]["f1_50"] = float("nan")
    rules = {m: r for m, r in G.load_rules().items() if m in ("f1_50", "added_jitter_rms_near")}

    def absent(doc):
        _per_case(doc, "g0", "torch", "vehicle")["f1_50"] = None
        _per_case(doc, "g0", "torch", "vehicle")["added_jitter_rms_near"] = None

    cand = read_replay(_edited_run(world, tmp_path / "a", absent))
    base.entries[key]["added_jitter_rms_near"] = float("nan")
    checks = {(c.case, c.runner, c.pipeline, c.rule): c for c in G.compare(base, cand, rules)}
    # g0 has labelled frames: F1 absent in both is a check never made, not a pass; so is a deployment delta
    assert checks[key + ("f1_50",)].status == "error" and "never made" in checks[key + ("f1_50",)].message
    assert checks[key + ("added_jitter_rms_near",)].status == "error"
    base.cases["g0"]["labelled_frames"] = 0  # an unlabelled recording: F1 cannot exist, the delta still must
    checks = {(c.case, c.runner, c.pipeline, c.rule): c for c in G.compare(base, cand, rules)}
    assert checks[key + ("f1_50",)].status == "pass" and "no labelled frame" in checks[key + ("f1_50",)].message
    assert checks[key + ("added_jitter_rms_near",)].status == "error"
    checks = G.compare(base, read_replay(world["run"]), rules)
    c = next(c for c in checks if (c.case, c.runner, c.pipeline, c.rule) == key + ("f1_50",))
    assert c.status == "error" and "no value" in c.message


def test_a_moved_torch_reference_is_reported_as_a_model_change(world, tmp_path):
    import torch

    from parity.models.checkpoint import save_checkpoint

    model = world["fitted"].build_model()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * p.std() * torch.randn(p.shape, generator=g))
    other = save_checkpoint(tmp_path / "other.pt", model, dict(world["fitted"].meta))
    r = _gate(world, tmp_path / "g", "--checkpoint", other.path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("gate FAIL (the model or its inputs changed, not the engine): model changed (checkpoint fit "), lines[0]
    assert "torch fp32 moved: torch on " in lines[0]
    assert "deployment deltas vs that torch:" in lines[0]
    assert any(line.startswith("provenance vs the baseline: model changed: checkpoint fit") for line in lines[1:3])
    assert "torch fp32 reference: MOVED" in r.stdout and _doc(tmp_path / "g")["reference_moved"]


def test_tightening_one_tolerance_turns_a_pass_into_a_fail(world, tmp_path):
    import torch

    from parity.models.checkpoint import save_checkpoint

    model = world["fitted"].build_model()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-5 * p.std() * torch.randn(p.shape, generator=g))
    nudged = save_checkpoint(tmp_path / "nudged.pt", model, dict(world["fitted"].meta))
    r = _gate(world, tmp_path / "g", "--checkpoint", nudged.path)
    assert r.returncode == 0, r.stdout + r.stderr  # a tiny weight change is within the default tolerances
    doc = _doc(tmp_path / "g")
    worse = [c for c in doc["checks"] if c["case"] != "*" and c["measured"] is not None and c["baseline"] is not None
             and c["rule"] in ("bend_p99_px", "jitter_rms_near", "jitter_rms_mid", "jitter_rms_far") and c["measured"] > c["baseline"]]
    assert worse, "the nudged model is worse somewhere"
    metric = worse[0]["rule"]
    cfg = tmp_path / "tight.toml"
    cfg.write_text(f"[gate.rules.{metric}]\ncase = {{ abs = 0.0, rel = 0.0 }}\n")
    r = _gate(world, tmp_path / "g2", "--run", tmp_path / "g" / "run", "--config", cfg)
    assert r.returncode == 1, r.stdout
    assert {f[3] for f in _failing(_doc(tmp_path / "g2"))} == {metric}


def test_rules_file_errors_name_the_file_and_field(tmp_path):
    cases = {
        "[gate.rules.acuracy]\ncase = { abs = 0.1 }\n": "did you mean 'accuracy'",
        "[gate.rules.accuracy]\ncase = { max = 0.1 }\n": "higher-is-better: use min",
        "[gate.rules.kink_rate]\ncase = { abs = -1 }\n": "kink_rate] case.abs = -1 is outside [0, 1]",
        "[gate.rules.bend_p99_px]\ncase = { abs = 1e300 }\n": "bend_p99_px] case.abs = 1e+300 is outside [0, 100000]",
        "[gate.rules.bend_p99_px]\ncase = { rel = 1e9 }\n": "case.rel = 1000000000.0 is outside [0, 10]",
        "[gate.rules.kink_rate]\ncase = 3\n": "must be a table",
        "[gate.rules.kink_rate]\nnote = 'x'\n": "unknown key 'note'",
        "[other]\n": "no [gate.rules",
        "not toml [": "not valid TOML",
    }
    for text, msg in cases.items():
        f = tmp_path / "rules.toml"
        f.write_text(text)
        with pytest.raises(UsageError, match=None) as e:
            G.load_rules(str(f))
        assert msg in str(e.value) and str(f) in str(e.value), (text, str(e.value))
    f.write_text("[gate.rules.kink_rate]\nenabled = false\n")
    assert "kink_rate" not in G.load_rules(str(f))
    # Disabling every rule but the pipeline gap used to pass a regressing candidate as "absent in both"
    from parity.decisions.baseline import GATED

    f.write_text("".join(f"[gate.rules.{m}]\nenabled = false\n" for m in GATED if m != "pipeline_gap_p99_px"))
    with pytest.raises(UsageError) as e:
        G.load_rules(str(f))
    assert str(f) in str(e.value) and "leaves the required metric family 'added-bend'" in str(e.value)
    f.write_text("[gate.rules.added_flicker_hz]\nenabled = false\n")
    with pytest.raises(UsageError, match="'added-flicker'"):
        G.load_rules(str(f))


@pytest.mark.parametrize("value, says", [
    (float("nan"), "must be a finite number or null"), (float("inf"), "must be a finite number or null"),
    (-0.5, "outside the metric's range"), (1e300, "outside the metric's range"), (-1e300, "outside the metric's range"),
    (10**400, "must be a finite number or null"), ("0.1", "must be a finite number or null"),
])
def test_a_baseline_value_outside_its_metric_is_refused(world, tmp_path, value, says):
    """A baseline is what every candidate is held to: values set to +-1e300 made a regressing
    candidate pass 60/60. Each is refused, exit 2, with the file and the field named."""
    doc = json.loads(world["baseline"].read_text())
    i = next(k for k, e in enumerate(doc["entries"]) if e["runner"] == "cpu-fp16")
    metric = "accuracy" if value == 1e300 else "added_bend_p99_px"
    doc["entries"][i][metric] = "__X__" if value == 10**400 else value  # json.dumps writes NaN and Infinity as Python reads them
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps(doc).replace('"__X__"', "1" + "0" * 400))
    with pytest.raises(UsageError) as e:
        load_baseline(bad)
    assert str(bad) in str(e.value) and f"entries[{i}].{metric}" in str(e.value) and says in str(e.value)
    if value == 1e300:  # and once end to end: exit 2, one line, no traceback
        r = run_cli("gate", "--baseline", bad, "--run", world["run"], "--out", tmp_path / "o")
        assert r.returncode == 2 and str(e.value) in r.stderr and "Traceback" not in r.stderr, r.stdout + r.stderr


def test_baseline_and_gate_input_errors(world, tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text("{not json")
    r = run_main("gate", "--baseline", bad, "--run", world["run"], "--out", tmp_path / "o")
    assert r.returncode == 2 and "unreadable baseline" in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr
    bad.write_text(json.dumps({"schema": "parity.baseline/1", "provenance": {"cases": {}}, "entries": [{"case": "x"}]}))
    r = run_main("gate", "--baseline", bad, "--run", world["run"], "--out", tmp_path / "o")
    assert r.returncode == 2 and "entries[0]" in r.stderr
    r = run_main("gate", "--baseline", tmp_path / "none.json", "--run", world["run"], "--out", tmp_path / "o")
    assert r.returncode == 2 and "no such baseline" in r.stderr
    r = run_main("gate", "--baseline", world["baseline"], "--run", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert r.returncode == 2 and "no such run folder" in r.stderr
    r = run_main("gate", "--baseline", world["baseline"], "--run", world["run"], "--checkpoint", "x.pt", "--out", tmp_path / "o")
    assert r.returncode == 2 and "either --run or" in r.stderr
    failed = _edited_run(world, tmp_path, lambda d: d.update(errors=[{"case": "g0", "error": "boom"}]))
    r = run_cli("baseline", "--run", failed, "--out", tmp_path / "nb.json")
    assert r.returncode == 2 and "a baseline needs a complete run" in r.stderr


def test_junit_schema_check_can_fail(tmp_path):
    import xmlschema

    bad = tmp_path / "bad.xml"
    bad.write_text('<testsuites><testsuite name="s"><testcase classname="c"/></testsuite></testsuites>')  # no tests=, no name=
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        xmlschema.XMLSchema(str(XSD)).validate(str(bad))


ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_reference_and_baseline_belong_together():
    """make replay / gate / sweep / rank use the committed checkpoint, and the committed baseline is of it."""
    from parity.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ROOT / "checkpoints" / "reference.pt")  # refuses weights that do not match the sidecar's hash
    base = load_baseline(ROOT / "reports" / "baselines" / "reference.json")  # every value validated on read
    assert base.provenance["checkpoint"]["sha256"] == ckpt.sha256
    assert base.provenance["checkpoint"]["path"] == "checkpoints/reference.pt"
    rules = G.load_rules()
    for (case, runner, pipeline), e in base.entries.items():
        for m in rules:
            if (m == "pipeline_gap_p99_px" and pipeline != "vehicle") or m == "batch_variance_dx_max_px":  # no capture in it
                continue
            assert e[m] == e[m], f"the committed baseline has no {m} for {case}/{runner}/{pipeline}: the gate could not check it"


@pytest.mark.parametrize("target", ["replay", "gate", "sweep", "rank"])
def test_no_make_target_but_train_retrains_the_reference(target):
    import subprocess

    plan = subprocess.run(["make", "-n", "-W", "pyproject.toml", target], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "parity train" not in plan and "parity" in plan
    train = subprocess.run(["make", "-n", "train"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "--out checkpoints/trained/reference.pt" in train and "--out checkpoints/reference.pt" not in train
