"""`parity report`: one self-contained HTML page per replay, sweep, rank and gate folder, opened in a
real browser (headless Chromium + selenium). Where the browser is missing the browser tests skip,
except under PARITY_REQUIRE_BROWSER=1 (set by .ci/run), where a skip would hide that nothing was
checked, so they fail."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from parity.decisions.report import DIFFERS, FILMSTRIP, GALLERY, GALLERY_PER_CASE, write_report

from . import browser
from .conftest import _tiny_scenario, rerecord_run, run_cli


def _need_browser():
    why = browser.missing()
    if why:
        if os.environ.get("PARITY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PARITY_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, random_checkpoint):
    """A replay, a sweep, a gate and a rank folder of two small cases."""
    import shutil

    from parity.cases.synth import write_case

    root = tmp_path_factory.mktemp("report")
    cases = [str(write_case(_tiny_scenario(f"r{i}", seed=40 + i), root / "cases" / f"r{i}")) for i in range(2)]
    cache = root / "cache"
    common = ["--cache-dir", cache, "--no-progress"]
    out = {}
    r = run_cli("replay", "--cases", *cases, "--checkpoint", random_checkpoint.path, "--runners", "torch,ort-fp16",
                "--pipeline", "vehicle,training", "--out", root / "replay", *common)
    assert r.returncode == 0, r.stderr
    assert f"report: {root / 'replay' / 'report.html'}" in r.stdout  # replay writes its report and says where
    out["replay"] = root / "replay"
    r = run_cli("sweep", "--cases", *cases, "--checkpoint", random_checkpoint.path, "--runners", "torch", "--perturb",
                "crop_shift_x,gaussian_noise", "--severities", "1,5", "--out", root / "sweep", *common)
    assert r.returncode == 0, r.stderr
    out["sweep"] = root / "sweep"
    assert run_cli("baseline", "--run", root / "replay", "--out", root / "base.json").returncode == 0
    r = run_cli("gate", "--baseline", root / "base.json", "--run", root / "replay", "--out", root / "gate", "--no-report")
    assert r.returncode == 0, r.stderr
    out["gate"] = root / "gate"
    spec = json.loads((root / "replay" / "summary.json").read_text())["provenance"]["pipelines"]["vehicle"]
    (root / "vehicle-full.json").write_text(json.dumps({**spec, "crop_offset": [0, 40]}))  # an ROI 40 px off: lanes that move, drift to draw
    r = run_cli("gate", "--baseline", root / "base.json", "--pipeline", f"{root / 'vehicle-full.json'},training", "--out", root / "gate-drift",
                *common)
    assert r.returncode in (0, 1), r.stdout + r.stderr  # random weights move their lanes little: drawn whether or not it fails
    out["gate-drift"] = root / "gate-drift"
    ck = root / "ckpts"
    ck.mkdir()
    for name in ("erm", "twin"):
        shutil.copy(random_checkpoint.path, ck / f"{name}.pt")
        (ck / f"{name}.json").write_text(json.dumps(dict(random_checkpoint.meta, name=name)))
    r = run_cli("rank", "--checkpoints", ck / "*.pt", "--cases", *cases, "--runners", "torch,ort-fp32", "--perturb", "crop_shift_y",
                "--severities", "5", "--window-s", "0.4", "--n-boot", "200", "--out", root / "rank", *common)
    assert r.returncode == 0, r.stderr
    out["rank"] = root / "rank"
    for kind in ("sweep", "gate", "rank"):
        r = run_cli("report", out[kind])
        assert r.returncode == 0 and "wrote" in r.stdout, r.stderr
    return out


def _expected_rows(kind: str, folder: Path) -> dict[str, int]:
    if kind == "replay":
        doc = json.loads((folder / "summary.json").read_text())
        return {"summary": len(doc["results"]), "per-case": len(doc["per_case"])}
    if kind == "sweep":
        return {"sweep-results": len(json.loads((folder / "summary.json").read_text())["results"])}
    if kind == "rank":
        return {"leaderboard": len(json.loads((folder / "rank.json").read_text())["leaderboard"])}
    doc = json.loads((folder / "gate.json").read_text())
    run = json.loads((folder.parent / "replay" / "summary.json").read_text())
    return {"gate-overall": sum(c["case"] == "*" and c["measured"] is not None for c in doc["checks"]),
            "summary": len(run["results"]), "per-case": len(run["per_case"])}


@pytest.mark.parametrize("kind", ["replay", "sweep", "gate", "rank"])
def test_report_opens_in_a_real_browser(folders, kind, tmp_path):
    _need_browser()
    page = browser.open_page(folders[kind] / "report.html", tmp_path / "shot.png")
    assert page.console_errors == []
    assert page.images > 0 and page.broken_images == []  # every embedded picture decodes (naturalWidth > 0)
    assert page.external_requests == []  # self-contained: nothing is fetched
    rows = _expected_rows(kind, folders[kind])
    assert {k: page.table_rows.get(k) for k in rows} == rows
    assert page.verdict and page.title.startswith(f"parity {kind}")
    if kind == "replay":  # where the deployed runner differs, its filmstrip and each case: present, with pictures that decode
        for section in ("where-the-deployed-forms-differ-most-from-torch", "filmstrip-where-a-deployed-runner-swings-most-against-torch",
                        "case-r0", "case-r1", "worst-bends-model-quality-where-the-model-itself-is-most-jagged"):
            assert page.sections.get(section, 0) >= 1, (section, page.sections)
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_replay_report_holds_what_a_reviewer_needs(folders):
    text = (folders["replay"] / "report.html").read_text()
    assert text.index('id="verdict"') < text.index('id="summary"') < text.index('id="per-case"')  # the verdict and summary come first
    assert "<script" not in text and not re.search(r'(src|href)="https?:', text)
    assert text.count("alt=\"lane position over time") == 2  # one per case (both cases are among the focus cases)
    bends = text[text.index('class="gallery bends"'):]
    assert bends.count("<figcaption>") == min(GALLERY, 2 * GALLERY_PER_CASE)  # the worst bends of the 2 cases, drawn on their frames
    # where the deployed runner differs most from torch comes before the model's own worst bends, one frame per runner at least
    differs = text[text.index('class="gallery differs"'):]
    differs = differs[: differs.index("</div>")]
    assert 1 <= differs.count("<figcaption>") <= DIFFERS and "ort-fp16 vs torch: " in differs and " px</figcaption>" in differs
    # a filmstrip of consecutive frames around the largest swing ort-fp16 adds, after the differences
    strip = text[text.index('class="filmstrip"'):]
    strip = strip[: strip.index("</div>")]
    assert text.index('class="gallery differs"') < text.index('class="filmstrip"')
    assert strip.count("<figcaption>") == FILMSTRIP and strip.count(" px</figcaption>") == 1  # the frame after the largest swing says it
    frames = [int(m) for m in re.findall(r"<figcaption>frame (\d+) ", strip)]
    assert frames == list(range(frames[0], frames[0] + FILMSTRIP))  # consecutive
    # each case a section of its own: its table and its lane over time
    for case in ("r0", "r1"):
        sec = text[text.index(f'<h2 id="case-{case}">'):]
        sec = sec[: sec.index("<h2 ", 5)]
        assert f'id="case-{case}-table"' in sec and f"alt=\"lane position over time, {case}" in sec
    assert "Provenance" in text and json.loads((folders["replay"] / "summary.json").read_text())["provenance"]["checkpoint"]["sha256"] in text


def test_a_drifting_gate_draws_where_the_lanes_moved_from_the_baseline(folders, tmp_path):
    text = (folders["gate-drift"] / "report.html").read_text()
    assert text.index("Where the candidate&#x27;s lanes moved most from the baseline&#x27;s") < text.index("Overall checks")
    drift = text[text.index('class="gallery drift"'):]
    drift = drift[: drift.index("</div>")]
    assert 1 <= drift.count("<figcaption>") <= 4 and " px from the baseline</figcaption>" in drift
    doc = json.loads((folders["gate-drift"] / "gate.json").read_text())
    assert doc["drift_worst"] and all(w["pipeline"] == "vehicle" for w in doc["drift_worst"])  # the training pipeline did not move
    _need_browser()
    page = browser.open_page(folders["gate-drift"] / "report.html", tmp_path / "shot.png")
    assert page.console_errors == [] and page.broken_images == [] and page.images >= drift.count("<figcaption>")
    assert page.sections["where-the-candidate-s-lanes-moved-most-from-the-baseline-s"] == drift.count("<figcaption>")


def test_rank_report_has_the_leaderboard_intervals_and_pareto(folders):
    text = (folders["rank"] / "report.html").read_text()
    for needle in ('id="leaderboard"', 'alt="metric intervals per checkpoint"', 'alt="Pareto front"', "twin", "erm"):
        assert needle in text


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    r = run_cli("report", tmp_path)
    assert r.returncode == 2 and "not a replay, sweep, rank or gate folder" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("report", tmp_path / "missing")
    assert r.returncode == 2 and "no such folder" in r.stderr


def test_report_survives_cases_that_moved(folders, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(folders["replay"], run)
    doc = json.loads((run / "summary.json").read_text())
    for c in doc["provenance"]["cases"].values():
        c["path"] = str(tmp_path / "gone")
    (run / "summary.json").write_text(json.dumps(doc))
    rerecord_run(run)  # the run as if its cases had been elsewhere
    text = write_report(run).read_text()
    assert "could not be read" in text and 'id="per-case"' in text


def test_skipped_browser_tests_are_named_at_the_end_with_how_to_run_them():
    from types import SimpleNamespace

    from .conftest import pytest_terminal_summary

    lines = []
    rep = SimpleNamespace(stats={"skipped": [SimpleNamespace(longrepr=("t.py", 1, "Skipped: Debian's chromium and chromium-driver are "
                                                                                  "not installed"))] * 2, "passed": []},
                          write_line=lambda line, **kw: lines.append(line))
    pytest_terminal_summary(rep)
    assert len(lines) == 1 and lines[0].startswith("2 browser test(s) skipped") and "apt-get install chromium chromium-driver" in lines[0]
    rep.stats["skipped"] = [SimpleNamespace(longrepr=("t.py", 1, "Skipped: no CUDA"))]
    lines.clear()
    pytest_terminal_summary(rep)
    assert lines == []
