import numpy as np
import pandas as pd
import pytest

from parity.preprocessing import perturb
from parity.cases.format import load_case
from parity.cli import main
from parity.errors import UsageError
from parity.models.rowanchor import RowAnchorAdapter

from .conftest import run_cli


@pytest.fixture(scope="module")
def setup(tiny_case, random_checkpoint):
    case = load_case(tiny_case)
    pipe = RowAnchorAdapter().pipelines()["vehicle"]
    model = random_checkpoint.build_model()
    clean = pipe.prepare(case, [1, 2])
    import torch

    with torch.inference_mode():
        targets = model(torch.from_numpy(clean)).numpy().argmax(axis=1)
    ctx = lambda frames: {"model": model, "targets": targets[: len(frames)], "std": pipe.std}  # noqa: E731
    return case, pipe, clean, ctx


def _prepare(case, pipe, name, sev, ctx, seed=0):
    a = perturb.Applied(perturb.get(name) if sev else None, sev, seed, case.name, ctx)
    fed, ts = a.schedule(case.timestamps)
    return a.pipeline(pipe).prepare(case, [1, 2], hooks=a.hooks()), fed, ts


def test_registry_covers_every_family_and_stage():
    assert len(perturb.REGISTRY) >= 25
    assert {p.family for p in perturb.REGISTRY.values()} == set(perturb.FAMILIES)
    assert {p.stage for p in perturb.REGISTRY.values()} == set(perturb.STAGES)
    assert all(len(p.values) == 5 and p.doc and p.unit for p in perturb.REGISTRY.values())


@pytest.mark.parametrize("name", list(perturb.REGISTRY))
def test_severity_zero_is_bit_identical_and_five_is_not(setup, name):
    case, pipe, clean, ctx = setup
    x0, fed0, ts0 = _prepare(case, pipe, name, 0, ctx)
    assert x0.tobytes() == clean.tobytes()
    x5, fed5, ts5 = _prepare(case, pipe, name, 5, ctx)
    if perturb.get(name).stage == "sequence":
        assert not (np.array_equal(fed5, fed0) and np.array_equal(ts5, ts0))
    else:
        assert np.abs(x5 - x0).mean() > 1e-3, name
        x5b, _, _ = _prepare(case, pipe, name, 5, ctx)
        assert x5b.tobytes() == x5.tobytes()  # seeded: the same run gives the same pixels


def test_severity_grows_the_change(setup):
    case, pipe, clean, ctx = setup
    for name in ("gaussian_noise", "crop_shift_x", "yuv_range", "defocus_blur", "fp16_input_cast"):
        d = [np.abs(_prepare(case, pipe, name, s, ctx)[0] - clean).mean() for s in (1, 3, 5)]
        assert d[0] < d[1] < d[2], (name, d)


def test_seed_changes_random_perturbations_only(setup):
    case, pipe, _, ctx = setup
    a = _prepare(case, pipe, "gaussian_noise", 3, ctx, seed=0)[0]
    b = _prepare(case, pipe, "gaussian_noise", 3, ctx, seed=1)[0]
    assert a.tobytes() != b.tobytes()
    assert _prepare(case, pipe, "gamma", 3, ctx, seed=0)[0].tobytes() == _prepare(case, pipe, "gamma", 3, ctx, seed=1)[0].tobytes()


def _plain_jpeg(rgb, q):
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def _plain_chroma(rgb, v):
    import cv2

    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    h, w = rgb.shape[:2]
    small = cv2.resize(np.ascontiguousarray(ycc[..., 1:]), (max(1, w // v), max(1, h // v)), interpolation=cv2.INTER_AREA)
    ycc[..., 1:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def _plain_shot(rgb, v, rng):
    bank = perturb._noise_bank(*rgb.shape[:2])
    h, w = rgb.shape[:2]
    dy, dx = int(rng.integers(0, 97)), int(rng.integers(0, 131))
    fy, fx = rng.integers(0, 2, 2)
    noise = bank[dy : dy + h, dx : dx + w][:: -1 if fy else 1, :: -1 if fx else 1]
    sigma = np.sqrt(np.arange(256, dtype=np.float32) * np.float32(255.0 / v))[rgb]
    return np.clip(rgb.astype(np.float32) + noise * sigma + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,plain", [("jpeg", _plain_jpeg), ("chroma_subsampling", _plain_chroma), ("shot_noise", _plain_shot)])
def test_fast_raw_perturbations_equal_their_plain_numpy_form(setup, name, plain):
    """The OpenCV-call-order rewrites (no negative-stride views, mixChannels, mirrored banks) change no pixel."""
    case, pipe, _, _ = setup
    p = perturb.get(name)
    for frame in (0, 1):
        rgb = pipe.decode(case, frame, "nv12")
        for sev in range(1, 6):
            a = perturb.Applied(p, sev, 3, case.name)
            args = (a.v, a.rng(frame)) if name == "shot_noise" else (a.v,)
            assert np.array_equal(a.raw(rgb.copy(), frame), plain(rgb.copy(), *args)), (name, sev, frame)


def test_fp16_cast_is_exact_fp16_and_bf16_rounding():
    x = np.float32([1.0001, -3.14159, 1e-3, 65504.0])
    np.testing.assert_array_equal(perturb.get("fp16_input_cast").fn(x, 10, None, {}), x.astype(np.float16).astype(np.float32))
    bf16 = perturb.get("fp16_input_cast").fn(x, 7, None, {})
    assert np.all((bf16.view(np.uint32) & 0xFFFF) == 0) and np.allclose(bf16, x, rtol=2**-8)
    import torch

    # The generic mantissa rounding at 7 bits is torch's bfloat16 cast, ties included (1 + 2^-8 + k 2^-7 are ties).
    ties = np.float32(1 + 2.0**-8 + np.arange(8) * 2.0**-7)
    y = np.concatenate([ties, -ties, np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 40])
    torch_bf16 = torch.from_numpy(y).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(perturb.round_mantissa(y, 7), torch_bf16)
    np.testing.assert_array_equal(perturb.get("fp16_input_cast").fn(y, 7, None, {}), torch_bf16)
    assert not np.array_equal(perturb.round_mantissa(y, 5), torch_bf16)


def test_fgsm_raises_the_loss(setup):
    import torch
    import torch.nn.functional as F

    case, pipe, clean, ctx = setup
    c = ctx([1, 2])
    adv = perturb.get("fgsm").fn(clean, 4, None, c)
    loss = lambda x: float(F.cross_entropy(c["model"](torch.from_numpy(x)), torch.from_numpy(c["targets"])))  # noqa: E731
    with torch.no_grad():
        assert loss(adv) > loss(clean)
    step = np.abs(adv - clean) * np.asarray(pipe.std, np.float32).reshape(1, 3, 1, 1) * 255
    assert np.allclose(step[step > 0], 4, rtol=1e-3)


def test_names_and_suites():
    assert set(perturb.resolve("deploy")) <= set(perturb.REGISTRY) and "fgsm" not in perturb.resolve("corruptions")
    with pytest.raises(UsageError, match="did you mean 'gaussian_noise'"):
        perturb.get("gausian_noise")


def test_sweep_is_reproducible_and_reuses_the_clean_pass(tiny_case, random_checkpoint, cache_dir, tmp_path, capsys):
    args = ["sweep", "--cases", str(tiny_case), "--checkpoint", str(random_checkpoint.path), "--runners", "torch,ort-fp32",
            "--perturb", "crop_shift_x,gaussian_noise,frame_drop,uint8_rounding,fgsm", "--severities", "1,5",
            "--window-s", "0.4", "--cache-dir", str(cache_dir), "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    a, b = pd.read_parquet(tmp_path / "a" / "sweep.parquet"), pd.read_parquet(tmp_path / "b" / "sweep.parquet")
    pd.testing.assert_frame_equal(a, b)
    clean = a[a.perturbation == "none"]
    assert len(clean) == 4 * 2 * 4 and set(clean.severity) == {0}  # frames x runners x lanes, once
    assert sorted(clean.frame.unique()) == [1, 2, 3, 4]  # one window of consecutive frames (0.4 s at 10 fps), centred
    assert set(a.perturbation) == {"none", "crop_shift_x", "gaussian_noise", "frame_drop", "uint8_rounding", "fgsm"}
    shifted = a[(a.perturbation == "crop_shift_x") & (a.runner == "torch")]
    assert shifted[shifted.severity == 5].dx_ref_mean_px.mean() > shifted[shifted.severity == 1].dx_ref_mean_px.mean()
    dropped = a[(a.perturbation == "frame_drop") & (a.severity == 5) & (a.runner == "torch")]
    assert dropped.frame.nunique() < 4  # dropped frames leave no rows
    assert "crop_shift_x" in printed and "worst acc drop" in printed


def test_a_sequence_perturbation_reuses_the_clean_outputs_of_the_frames_it_feeds(tiny_case, random_checkpoint, cache_dir, tmp_path,
                                                                                monkeypatch):
    from parity.runners.base import Runner

    fed = {}
    infer = Runner.infer

    def counting(self, feed):
        fed[self.name] = fed.get(self.name, 0) + len(next(iter(feed.values())))
        return infer(self, feed)

    monkeypatch.setattr(Runner, "infer", counting)
    perts = ["frame_drop", "frame_repeat", "timestamp_jitter"]

    def sweep(window, out):
        fed.clear()
        assert main(["sweep", "--cases", str(tiny_case), "--checkpoint", str(random_checkpoint.path), "--runners", "torch,ort-fp32",
                     "--perturb", ",".join(perts), "--severities", "1,5", "--window-s", window, "--cache-dir", str(cache_dir),
                     "--no-progress", "--out", str(tmp_path / out)]) == 0
        return pd.read_parquet(tmp_path / out / "sweep.parquet")

    a = sweep("0", "all")
    assert fed == {"torch": 6, "ort-fp32": 6}  # the clean pass's 6 frames, none fed again
    case = load_case(tiny_case)
    key = ["runner", "frame", "lane"]
    clean = a[a.perturbation == "none"].set_index(key).sort_index()
    for (name, sev), g in a[a.perturbation != "none"].groupby(["perturbation", "severity"]):
        src = perturb.Applied(perturb.get(name), sev, 0, case.name, None).schedule(case.timestamps)[0]
        g = g.set_index(key).sort_index()
        at_fed = [(r, src[f], lane) for r, f, lane in g.index]  # each time step shows the lanes of the frame fed there
        assert all(np.array_equal(u, v, equal_nan=True) for u, v in zip(g.x, clean.loc[at_fed].x)), (name, sev)
        if name != "frame_repeat":
            assert (g.dx_ref_mean_px.dropna() == 0).all(), (name, sev)
    assert a[(a.perturbation == "frame_drop") & (a.severity == 5)].frame.nunique() < 6  # dropped frames leave no rows
    # A 4-frame window: a repeat of the frame before it is the only frame fed again.
    b = sweep("0.4", "window")
    repeats = {int(f) for sev in (1, 5) for f in perturb.Applied(perturb.get("frame_repeat"), sev, 0, case.name, None)
               .schedule(case.timestamps)[0][1:5] if f == 0}
    assert fed == {"torch": 4 + len(repeats), "ort-fp32": 4 + len(repeats)}
    assert set(b.perturbation) == {"none", *perts}


def test_perturb_cli(tiny_case, tmp_path):
    res = run_cli("perturb", "list")
    assert res.returncode == 0 and res.stdout.count("\n") >= 27
    res = run_cli("perturb", "show", "roll", "--case", tiny_case, "--frame", "2", "--out", tmp_path / "g.png")
    assert res.returncode == 0, res.stderr
    from PIL import Image

    g = np.asarray(Image.open(tmp_path / "g.png")).astype(int)
    h, w = g.shape[0] // 2, g.shape[1] // 3
    assert np.abs(g[20:h, :w] - g[h + 20 :, 2 * w :]).mean() > 5  # severity 5 vs 0 visibly differ
    res = run_cli("perturb", "show", "rol", "--case", tiny_case, "--out", tmp_path / "x.png")
    assert res.returncode == 2 and "did you mean 'roll'" in res.stderr
