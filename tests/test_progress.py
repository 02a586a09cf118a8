"""Progress a CI log shows: a line per finished unit with elapsed time and an estimate off a terminal,
a tqdm bar on one, nothing when disabled."""
import io

from parity.progress import LineProgress, progress

from .conftest import run_cli


def test_lines_count_elapsed_and_estimate():
    t = iter([0.0, 10.0, 30.0])
    out = io.StringIO()
    p = LineProgress(4, "replay", "case", out, clock=lambda: next(t))
    p.update(1)
    p.update(3)
    assert out.getvalue().splitlines() == ["replay: 1/4 cases (25%), 10 s, about 30 s left", "replay: 4/4 cases (100%), 30 s"]


def test_a_terminal_gets_a_bar_a_log_gets_lines_and_disabled_gets_nothing():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    from tqdm import tqdm

    bar = progress(3, "rank", "unit", stream=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress(3, "rank", "unit", stream=io.StringIO()), LineProgress)
    quiet = io.StringIO()
    progress(3, "rank", "unit", enabled=False, stream=quiet).update(1)
    assert quiet.getvalue() == ""


def test_a_replay_into_a_log_says_how_far_it_is(tiny_case, random_checkpoint, cache_dir, tmp_path):
    r = run_cli("replay", "--cases", tiny_case, "--checkpoint", random_checkpoint.path, "--runners", "torch", "--out", tmp_path / "o",
                "--cache-dir", cache_dir, "--no-report")
    assert r.returncode == 0, r.stderr
    assert "replay: 6/6 frames (100%)" in r.stderr


def test_a_terminal_bar_moves_per_batch_and_a_log_line_per_case(tiny_case, random_checkpoint, cache_dir, tmp_path, monkeypatch):
    import parity.progress as P

    from .conftest import run_main

    steps = {}

    class Bar:  # what progress() returns on a terminal (tqdm's update/close), recording each step
        def __init__(self, per_batch):
            self.per_batch, self.steps = per_batch, []

        def update(self, n=1):
            self.steps.append(n)

        def close(self):
            pass

    for per_batch in (True, False):
        monkeypatch.setattr(P, "progress", lambda total, *a, **k: steps.setdefault(per_batch, Bar(per_batch)))
        r = run_main("replay", "--cases", tiny_case, "--checkpoint", random_checkpoint.path, "--runners", "torch", "--pipeline", "vehicle",
                     "--batch-size", "2", "--out", tmp_path / f"o{per_batch}", "--cache-dir", cache_dir, "--no-report")
        assert r.returncode == 0, r.stderr
    assert steps[True].steps == [2, 2, 2, 0]  # 6 frames in batches of 2: the bar moved after each (and 0 left when the case ended)
    assert steps[False].steps == [6]  # a log: one line when the case is done
    assert P._TICK is None  # nothing left routed once the replay ended


def test_a_long_unit_still_writes_a_line_every_half_minute():
    t = iter([0.0, 10.0, 20.0, 35.0, 40.0, 50.0, 70.0, 71.0])
    out = io.StringIO()
    p = LineProgress(100, "replay", "frame", out, clock=lambda: next(t))
    for _ in range(6):
        p.tick(10)  # batches of one long case, at 10, 20, 35, 40, 50 and 70 s
    p.update(40)  # the case finished
    assert out.getvalue().splitlines() == ["replay: 30/100 frames (30%), 35 s, about 82 s left",
                                           "replay: 60/100 frames (60%), 70 s, about 47 s left",
                                           "replay: 100/100 frames (100%), 71 s"]


def test_a_sweep_bar_moves_per_batch_too(tiny_case, random_checkpoint, cache_dir, tmp_path, monkeypatch):
    import parity.progress as P

    from .conftest import run_main

    steps = []

    class Bar:
        def update(self, n=1):
            steps.append(n)

        def close(self):
            pass

    monkeypatch.setattr(P, "progress", lambda total, *a, **k: Bar())
    r = run_main("sweep", "--cases", tiny_case, "--checkpoint", random_checkpoint.path, "--runners", "torch", "--perturb", "crop_shift_x",
                 "--severities", "1,5", "--window-s", "0", "--batch-size", "4", "--out", tmp_path / "s", "--cache-dir", cache_dir)
    assert r.returncode == 0, r.stderr
    assert steps == [4, 2] * 3 + [0]  # 6 frames in batches of 4, for the clean pass and 2 severities, then nothing left
