"""Each training recipe's mechanism, on a tiny model and a few frames."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from parity.errors import UsageError
from parity.models.checkpoint import load_checkpoint
from parity.training.loop import train
from parity.training.recipes import all_recipes, get_recipe

from .conftest import run_cli, run_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parent(tiny_case, tmp_path_factory):
    return train([tiny_case], tmp_path_factory.mktemp("parent") / "erm.pt", epochs=3, batch_size=3, progress=False)


def test_registry_and_settings():
    names = set(all_recipes())
    assert {"erm", "fgsm", "swa", "ema", "swalp", "soup-uniform", "soup-greedy", "wise-ft", "regmixup", "rotation-ssl",
            "uat-ot", "uat-ft", "reinit", "l2-sp", "fp16-aware", "perturb-aug"} <= names
    assert get_recipe("fgsm").resolve({"epsilon": "2"})["epsilon"] == 2.0
    assert get_recipe("reinit").resolve({"diagnostic": "false"})["diagnostic"] is False
    with pytest.raises(UsageError, match="no setting 'eps'"):
        get_recipe("fgsm").resolve({"eps": "2"})
    with pytest.raises(UsageError, match="did you mean 'fgsm'"):
        get_recipe("fgms")


def test_fgsm_step_is_alpha_sign_of_the_gradient_clipped_to_epsilon_and_the_pixel_range():
    import torch.nn.functional as F

    from parity.models.rowanchor import RowAnchorAdapter
    from parity.training.recipes.fgsm import fgsm_example, input_units

    torch.manual_seed(0)
    adapter = RowAnchorAdapter()
    model = adapter.build().eval()
    pipe = adapter.pipelines()["training"]
    eps, lo, hi = input_units(pipe, 4.0)
    alpha, _, _ = input_units(pipe, 5.0)
    assert torch.allclose(input_units(pipe, 1.0)[0].flatten(), torch.tensor(pipe.scale) / torch.tensor(pipe.std))
    x = lo + torch.rand(2, 3, 112, 288) * (hi - lo)  # valid frames, some pixels near black and white
    y = torch.randint(0, 65, (2, 18, 4))
    xa = fgsm_example(model, x, y, pipe, eps_levels=4.0, alpha_levels=5.0, gen=torch.Generator().manual_seed(1))
    # the same step by hand: random start, one signed-gradient step of alpha, clip to eps, clip to the pixel range
    d0 = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * eps
    d0 = (torch.clamp(x + d0, lo, hi) - x).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x + d0), y), d0)
    expected = torch.clamp(x + torch.clamp(d0.detach() + alpha * g.sign(), -eps, eps), lo, hi)
    assert torch.allclose(xa, expected, atol=1e-6)
    d = xa - x
    assert (d.abs() <= eps + 1e-6).all() and (xa >= lo - 1e-6).all() and (xa <= hi + 1e-6).all()


def test_swa_weights_are_the_mean_of_the_epoch_snapshots(tiny_case, tmp_path, monkeypatch):
    from parity.training.recipes import averaging

    snaps = []
    real = averaging._average

    def spy(ctx, **kw):
        snaps.append({k: v.detach().clone() for k, v in ctx.model.state_dict().items()})
        real(ctx, **kw)

    monkeypatch.setattr(averaging, "_average", spy)
    ck = train([tiny_case], tmp_path / "swa.pt", epochs=4, batch_size=3, method="swa", settings={"start": "0.5"}, progress=False)
    assert len(snaps) == 3 and ck.meta["recipe_report"]["averaged"] == 3  # epochs 2, 3, 4
    state = torch.load(ck.path, weights_only=True)
    for k in ("backbone.0.weight", "head.2.weight", "head.2.bias"):
        assert torch.allclose(state[k], torch.stack([s[k] for s in snaps]).mean(0), atol=1e-6)
    # batch-norm statistics were recomputed for the averaged weights, not averaged
    assert not torch.allclose(state["backbone.1.running_mean"], torch.stack([s["backbone.1.running_mean"] for s in snaps]).mean(0))


def test_ema_and_regmixup_and_fp16_aware_train_and_replay_loads_them(tiny_case, tmp_path, random_checkpoint):
    for method in ("ema", "regmixup", "fp16-aware"):
        ck = train([tiny_case], tmp_path / f"{method}.pt", epochs=2, batch_size=3, method=method, progress=False)
        assert ck.meta["method"] == method and set(torch.load(ck.path, weights_only=True)) == set(random_checkpoint.build_model().state_dict())
        assert ck.meta["laziness"]["reference"] == "initialisation" and "head.2" in ck.meta["laziness"]["relative_weight_change"]


def test_fp16_rounding_is_active_in_training_and_absent_at_export():
    from parity.models.rowanchor import RowAnchorAdapter
    from parity.training.recipes.fp16_aware import add_fp16_rounding, remove_fp16_rounding

    torch.manual_seed(0)
    model = RowAnchorAdapter().build()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 112, 288)
    model.eval()
    plain = model(x)
    handles = add_fp16_rounding(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    seen = {}
    model.head[2].register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))
    out = model(x)
    assert torch.equal(seen["out"], seen["out"].half().float())  # activations rounded while training
    w = model.head[2].weight
    assert torch.equal(w, w.half().float()) and not torch.equal(w, model.head[2].parametrizations.weight.original)  # weights as fp16 stores them
    out.sum().backward()  # straight through: the fp32 original receives the gradient
    assert model.head[2].parametrizations.weight.original.grad is not None
    model.load_state_dict(state)  # the training forward moved the batch-norm statistics
    remove_fp16_rounding(model, handles)
    assert set(model.state_dict()) == set(keys)  # the plain network again, with its fp32 weights
    model.eval()
    assert torch.equal(model(x), plain)


def test_wise_ft_at_alpha_0_and_1_returns_the_endpoints():
    from parity.training.recipes.wise_ft import interpolate

    a = {"w": torch.zeros(3), "n": torch.tensor(1)}
    b = {"w": torch.ones(3), "n": torch.tensor(5)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"]) and torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(interpolate(a, b, 0.25)["w"], torch.full((3,), 0.25)) and interpolate(a, b, 0.5)["n"] == 5


def test_wise_ft_picks_alpha_on_the_selection_cases_never_the_evaluated_ones(parent, tiny_case, tmp_path, monkeypatch):
    from parity.training import loop

    # the choice is made on the selection cases: every evaluate() inside the recipe sees them, not --eval-cases
    real, seen = loop.evaluate, []

    def spy(model, adapter, cases, pipeline="training"):
        seen.append([c.root for c in cases])
        return real(model, adapter, cases, pipeline)

    monkeypatch.setattr(loop, "evaluate", spy)
    sel = tmp_path / "sel"
    import shutil

    shutil.copytree(tiny_case, sel)
    ck = train([tiny_case], tmp_path / "wise.pt", eval_cases=[tiny_case], select_cases=[sel], epochs=2, batch_size=3, method="wise-ft",
               parent=parent.path, settings={"grid": "0,1"}, progress=False)
    choice_calls = seen[:2]  # the grid's two alphas, before the sidecar's held-out report
    assert all(roots == [sel] for roots in choice_calls) and all(roots == [tiny_case] for roots in seen[2:])
    rep = ck.meta["recipe_report"]
    assert rep["chosen_on"] == ["tiny"] and ck.meta["data"]["select_cases"] == ["tiny"]  # the copy keeps its case name
    scores = {float(k): v for k, v in rep["selection_accuracy_by_alpha"].items()}
    assert rep["alpha"] in (0.0, 1.0) and scores[rep["alpha"]] == max(scores.values())
    assert ck.meta["parents"][0]["sha256"] == parent.sha256 and ck.meta["laziness"]["reference"] == "parent checkpoint"
    if rep["alpha"] == 0.0:  # the start itself
        for k, v in torch.load(ck.path, weights_only=True).items():
            if v.is_floating_point() and "running" not in k:
                assert torch.allclose(v, parent.build_model().state_dict()[k])


def test_reinit_resets_exactly_the_named_layers(parent):
    from parity.training.recipes.reinit import reinitialise

    model = parent.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert reinitialise(model, ["head.2", "backbone.0"]) == ["head.2", "backbone.0"]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.2.weight", "head.2.bias", "backbone.0.weight"}
    with pytest.raises(UsageError, match="no resettable layer named 'head.9'"):
        reinitialise(model, ["head.9"])


def test_reinit_recipe_and_layer_diagnostic(parent, tiny_case, tmp_path):
    from parity.cases.format import load_case
    from parity.training.initial import checkpoint_zero
    from parity.training.loop import evaluate

    # checkpoint 0 is the parent's saved initialisation, read back by its sha256
    zero = torch.load(parent.path.with_suffix(".init.pt"), weights_only=True)
    assert parent.meta["init_weights"]["file"] == "erm.init.pt"
    ck = train([tiny_case], tmp_path / "reinit.pt", eval_cases=[tiny_case], epochs=1, batch_size=3, method="reinit",
               parent=parent.path, progress=False)
    assert all(torch.equal(zero[k], v) for k, v in checkpoint_zero(ck).items())  # a fine-tune's checkpoint 0 is its parent's
    rep = ck.meta["recipe_report"]
    assert rep["reinitialised"] == ["head.2"] and rep["reinitialised_to"] == "checkpoint-0"
    reinit, rerand = rep["layer_reinit_accuracy"], rep["layer_rerandom_accuracy"]
    assert set(reinit) >= {"backbone.0", "pool", "head.0", "head.2"} and set(reinit) == set(rerand)
    assert all(0 <= v <= 1 for v in [*reinit.values(), *rerand.values()])
    # re-initialisation means those very weights: recompute one layer's figure with checkpoint 0 put back by hand
    model = ck.build_model()
    state = model.state_dict()
    state.update({k: zero[k] for k in ("backbone.0.weight",)})
    model.load_state_dict(state)
    assert evaluate(model.eval(), ck.adapter(), [load_case(tiny_case)], "vehicle")["overall"]["accuracy"] == pytest.approx(reinit["backbone.0"])


def test_checkpoint_zero_rebuilt_from_the_seed_is_verified_against_the_laziness_record(parent, tmp_path):
    import shutil

    from parity.errors import CheckpointError
    from parity.models.checkpoint import load_checkpoint
    from parity.training.initial import checkpoint_zero

    saved = torch.load(parent.path.with_suffix(".init.pt"), weights_only=True)
    old = tmp_path / "old.pt"  # a checkpoint from before init files: no init_weights in the sidecar
    shutil.copy(parent.path, old)
    meta = {k: v for k, v in parent.meta.items() if k != "init_weights"}
    (tmp_path / "old.json").write_text(json.dumps(dict(meta, name="old")))
    rebuilt = checkpoint_zero(load_checkpoint(old))
    assert all(torch.equal(saved[k], rebuilt[k]) for k in saved)
    # the wrong seed is another draw: refused, never used silently
    (tmp_path / "old.json").write_text(json.dumps(dict(meta, name="old", hyperparameters=dict(meta["hyperparameters"], seed=7))))
    with pytest.raises(CheckpointError, match="does not reproduce the sidecar's laziness record"):
        checkpoint_zero(load_checkpoint(old))
    # a saved checkpoint 0 that is not the recorded one is refused by its sha256
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(parent.path, bad / "erm.pt")
    shutil.copy(parent.path.with_suffix(".json"), bad / "erm.json")
    torch.save({k: v + 1 for k, v in saved.items()}, bad / "erm.init.pt")
    with pytest.raises(CheckpointError, match="sha256 differs"):
        checkpoint_zero(load_checkpoint(bad / "erm.pt"))


def test_the_committed_reference_has_a_verified_checkpoint_zero():
    from parity.models.checkpoint import load_checkpoint
    from parity.training.initial import checkpoint_zero, laziness

    ref = load_checkpoint(ROOT / "checkpoints" / "reference.pt")
    zero = checkpoint_zero(ref)
    assert laziness(ref.build_model(), zero) == pytest.approx(ref.meta["laziness"]["relative_weight_change"], abs=2e-6)


def test_l2sp_penalty_is_zero_at_the_start_and_grows_away_from_it(parent):
    from parity.training.recipes.l2sp import l2sp_penalty

    model = parent.build_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert float(l2sp_penalty(model, start, 0.1).detach()) == 0.0
    with torch.no_grad():
        model.head[2].bias.add_(1.0)
    assert float(l2sp_penalty(model, start, 0.1).detach()) == pytest.approx(0.5 * 0.1 * model.head[2].bias.numel(), rel=1e-6)


def test_cli_train_method_from_and_set(parent, tiny_case, tmp_path):
    res = run_cli("train", "--cases", tiny_case, "--out", tmp_path / "f.pt", "--method", "l2-sp", "--from", parent.path,
                  "--set", "alpha=0.5", "--epochs", "1", "--batch-size", "3", "--no-progress")
    assert res.returncode == 0, res.stderr
    side = json.loads((tmp_path / "f.json").read_text())
    assert side["method"] == "l2-sp" and side["hyperparameters"]["recipe"] == {"alpha": 0.5}
    assert load_checkpoint(tmp_path / "f.pt").build_model() is not None
    for args, message in ((["--method", "wise-ft"], "needs"), (["--method", "nope"], "unknown method"),
                          (["--set", "alpha"], "key=value"), (["--batch-size", "64"], "fewer than one batch")):
        bad = run_main("train", "--cases", tiny_case, "--out", tmp_path / "g.pt", "--epochs", "1", "--no-progress", *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, (args, bad.stderr)
    listed = run_main("methods", "list")
    assert listed.returncode == 0 and "wise-ft" in listed.stdout and "[needs --from]" in listed.stdout


def test_a_fine_tune_without_epochs_or_lr_gets_the_zoos_schedule(parent, tiny_case, tmp_path):
    from parity.training.zoo import ZOO_EPOCHS, ZOO_LR

    res = run_main("train", "--cases", tiny_case, "--out", tmp_path / "f.pt", "--method", "erm", "--from", parent.path,
                   "--batch-size", "3", "--no-progress")
    assert res.returncode == 0, res.stderr
    hp = json.loads((tmp_path / "f.json").read_text())["hyperparameters"]
    assert (hp["epochs"], hp["lr"]) == (ZOO_EPOCHS, ZOO_LR)


def test_swalp_quantises_weights_to_a_block_grid_and_averages_in_full_precision(tiny_case, tmp_path):
    from parity.training.recipes.swalp import block_quantise

    t = torch.randn(1000) * 3
    q = block_quantise(t, 8, torch.Generator().manual_seed(0))
    scale = 2.0 ** (np.floor(np.log2(float(t.abs().max()))) - 8 + 2)  # the authors' block_quantize: floor
    assert torch.allclose(q / scale, torch.round(q / scale)) and len(torch.unique(q)) <= 256
    assert (q - t).abs().max() <= scale + 1e-6 and abs(float((q - t).mean())) < 0.1 * scale  # stochastic: unbiased
    # the grid uses the levels an 8-bit block offers: a ceil exponent would leave half of them unused
    u = torch.linspace(-0.9, 0.9, 20001)
    assert len(torch.unique(block_quantise(u, 8, torch.Generator().manual_seed(1)))) >= 200
    ck = train([tiny_case], tmp_path / "swalp.pt", epochs=3, batch_size=3, method="swalp", progress=False)
    assert ck.meta["recipe_report"]["averaged"] >= 1 and ck.meta["recipe_report"]["quantised_layers"] >= 4


def test_swalp_quantises_activations_forward_and_errors_backward():
    import torch.nn.functional as F

    from parity.training.recipes.swalp import add_activation_quantisers

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3)).train()
    state = add_activation_quantisers(net, 8, 8)
    seen = {}
    net[0].register_forward_hook(lambda m, a, out: seen.__setitem__("act", out))  # runs after the quantiser: sees its output
    x = torch.randn(2, 3, 9, 9)
    y = net(x)
    act = seen["act"]
    step = 2.0 ** (np.floor(np.log2(float(act.abs().max()))) - 6)
    assert torch.allclose(act / step, torch.round(act / step), atol=1e-4)  # the activation leaving conv 0 is on its block grid
    arriving = {}
    act.register_hook(lambda g: arriving.__setitem__("g", g.clone()))  # the error at conv 0's output, before the quantiser
    y.backward(torch.randn_like(y))
    # conv 0's weight gradient is that of the quantised error, not of the error that arrived
    plain = torch.autograd.grad(F.conv2d(x, net[0].weight, net[0].bias), net[0].weight, arriving["g"])[0]
    assert not torch.allclose(net[0].weight.grad, plain, rtol=1e-3, atol=1e-6)
    state["on"] = False  # finished: full precision
    want = F.conv2d(F.relu(F.conv2d(x, net[0].weight, net[0].bias)), net[2].weight, net[2].bias)
    assert torch.allclose(net(x), want, atol=1e-6)


def test_swa_averages_at_swalr_constant_rate_not_the_annealed_one(tiny_case, tmp_path):
    ck = train([tiny_case], tmp_path / "swa.pt", epochs=4, batch_size=3, lr=2e-3, method="swa", settings={"start": "0.5"}, progress=False)
    lrs = ck.meta["recipe_report"]["lr_at_snapshots"]
    assert len(lrs) == 3 and all(v == pytest.approx(0.5 * 2e-3) for v in lrs)  # OneCycle would end at ~0


def test_ema_horizon_fits_the_run(tiny_case, tmp_path):
    ck = train([tiny_case], tmp_path / "ema.pt", epochs=4, batch_size=3, method="ema", progress=False)
    from parity.cases.format import load_case

    rep = ck.meta["recipe_report"]
    steps = 4 * (int(load_case(tiny_case).labelled.sum()) // 3)
    assert rep["decay"] == pytest.approx(1 - 1 / max(1.0, 0.2 * steps)) and rep["first_iterate_share"] < 0.01


def test_rotation_head_is_trained_and_absent_from_the_saved_model_and_onnx(tiny_case, tmp_path, random_checkpoint, parent, cache_dir):
    import onnx

    from parity.runners.artifacts import ArtifactCache, export_onnx

    ck = train([tiny_case], tmp_path / "rot.pt", epochs=1, batch_size=3, method="rotation-ssl", progress=False)
    assert set(torch.load(ck.path, weights_only=True)) == set(random_checkpoint.build_model().state_dict())
    path, _ = export_onnx(ck, ArtifactCache(cache_dir))
    g = onnx.load(str(path)).graph
    assert [o.name for o in g.output] == ["logits"] and not any("rot" in i.name for i in g.initializer)
    ref = onnx.load(str(export_onnx(parent, ArtifactCache(cache_dir))[0])).graph  # trained: no shared initialisers
    assert sorted(tuple(i.dims) for i in g.initializer) == sorted(tuple(i.dims) for i in ref.initializer)  # no extra head


def test_uat_uses_pseudo_targets_not_labels(tiny_case, tmp_path, parent, monkeypatch):
    from parity.training.recipes import uat

    seen = []
    real = uat.fgsm_example

    def spy(model, x, y, *a, **k):
        seen.append(y.clone())
        return real(model, x, y, *a, **k)

    monkeypatch.setattr(uat, "fgsm_example", spy)
    train([tiny_case], tmp_path / "uat.pt", epochs=1, batch_size=3, method="uat-ft", parent=parent.path, progress=False)
    teacher = parent.build_model()
    assert seen and all(s.dtype == torch.long and s.max() <= 64 for s in seen)
    ck = train([tiny_case], tmp_path / "uat_ot.pt", epochs=1, batch_size=3, method="uat-ot", progress=False)
    assert ck.meta["method"] == "uat-ot" and teacher is not None


def test_greedy_soup_never_accepts_an_ingredient_that_lowers_the_score():
    from parity.training.recipes.soups import average, greedy_soup

    states = [{"w": torch.tensor([float(v)])} for v in (1.0, 0.0, 5.0, 1.25)]
    score = lambda s: -abs(float(s["w"][0]) - 1.1)  # noqa: E731  best soups sit near 1.1
    soup, accepted, trail = greedy_soup(states, score)
    assert accepted == [0, 3]  # the best ingredient first (1.0), then 1.25 (the mean 1.125 is better); 0 and 5 would lower it
    best = trail[0]["score"]
    for step in trail[1:]:
        if step["accepted"]:
            assert step["score"] > best
            best = step["score"]
    assert torch.equal(soup["w"], average([states[i] for i in accepted])["w"]) and 2 not in accepted and 1 not in accepted
    assert torch.allclose(average(states)["w"], torch.tensor([1.8125]))


def test_wise_ft_ties_go_to_the_configured_alpha_not_the_parent():
    from parity.training.recipes.wise_ft import choose_alpha

    assert choose_alpha({0.0: 0.9, 0.25: 0.9, 0.5: 0.9, 1.0: 0.8}, 0.5) == 0.5
    assert choose_alpha({0.0: 0.9, 0.75: 0.9, 1.0: 0.95}, 0.5) == 1.0


def test_soup_recipes_train_ingredients_from_one_parent(tiny_case, tmp_path, parent):
    with pytest.raises(UsageError, match="--select-cases"):
        train([tiny_case], tmp_path / "s0.pt", eval_cases=[tiny_case], epochs=1, batch_size=3, method="soup-greedy",
              parent=parent.path, settings={"ingredients": "2"}, progress=False)
    ck = train([tiny_case], tmp_path / "soup.pt", eval_cases=[tiny_case], select_cases=[tiny_case], epochs=1, batch_size=3,
               method="soup-greedy", parent=parent.path, settings={"ingredients": "2"}, progress=False)
    rep = ck.meta["recipe_report"]
    assert rep["ingredients"] == 2 and rep["accepted"] and (tmp_path / "soup.ingredients" / "ingredient1.pt").is_file()
    side = json.loads((tmp_path / "soup.ingredients" / "ingredient1.json").read_text())
    assert side["parents"][0]["sha256"] == parent.sha256 and side["hyperparameters"]["seed"] == 1


def test_zoo_builds_reuses_and_resumes(tiny_case, tmp_path, parent):
    from parity.training.zoo import build_zoo

    out = tmp_path / "zoo"
    logs = []
    rows = build_zoo([str(tiny_case)], [str(tiny_case)], parent.path, out, methods=["erm", "swa"], epochs=1, batch_size=3,
                     progress=False, log=logs.append)
    assert [r["method"] for r in rows] == ["erm", "swa"] and all(r["accuracy_vehicle"] is not None for r in rows)
    stamp = (out / "swa.pt").stat().st_mtime_ns
    logs.clear()
    build_zoo([str(tiny_case)], [str(tiny_case)], parent.path, out, methods=["erm", "swa"], epochs=1, batch_size=3,
              progress=False, log=logs.append)
    assert logs == ["[1/2] erm seed 0: up to date", "[2/2] swa seed 0: up to date"] and (out / "swa.pt").stat().st_mtime_ns == stamp
    (out / "erm.pt").unlink()  # an interrupted zoo: what is missing is rebuilt, the rest reused
    logs.clear()
    build_zoo([str(tiny_case)], [str(tiny_case)], parent.path, out, methods=["erm", "swa"], epochs=1, batch_size=3,
              progress=False, log=logs.append)
    assert logs[0].startswith("[1/2] erm seed 0: training") and "[2/2] swa seed 0: up to date" in logs
    zoo = json.loads((out / "zoo.json").read_text())
    assert zoo["parent_sha256"] == parent.sha256 and len(zoo["checkpoints"]) == 2
    assert load_checkpoint(out / "swa.pt").meta["parents"][0]["sha256"] == parent.sha256
    # a second seed adds erm-s1 beside erm (reused), trained with that seed
    logs.clear()
    rows = build_zoo([str(tiny_case)], [str(tiny_case)], parent.path, out, methods=["erm"], epochs=1, batch_size=3, seeds=(0, 1),
                     progress=False, log=logs.append)
    assert logs[0] == "[1/2] erm seed 0: up to date" and logs[1].startswith("[2/2] erm seed 1: training")
    s1 = load_checkpoint(out / "erm-s1.pt")
    assert s1.meta["hyperparameters"]["seed"] == 1 and s1.sha256 != load_checkpoint(out / "erm.pt").sha256
    assert [(r["method"], r["seed"]) for r in rows] == [("erm", 0), ("erm", 1)]


def test_perturb_aug_copies_are_deployment_mismatches_of_the_same_frames(tiny_case, tmp_path):
    from parity.cases.format import load_case
    from parity.models.rowanchor import RowAnchorAdapter
    from parity.training.recipes.perturb_aug import TRAIN_RANGES, perturbed_copies

    adapter = RowAnchorAdapter()
    case = load_case(tiny_case)
    x, log = perturbed_copies([case], adapter, list(TRAIN_RANGES), seed=0)
    clean = adapter.pipelines()["vehicle"].prepare(case, np.flatnonzero(case.labelled))
    assert x.shape == clean.shape and len(log) == len(x) and all(n in TRAIN_RANGES for n, _ in log)
    assert all(np.abs(x[k] - clean[k]).max() > 0 for k in range(len(x)))  # every copy is perturbed
    again, _ = perturbed_copies([case], adapter, list(TRAIN_RANGES), seed=0)
    np.testing.assert_array_equal(again, x)  # seeded
    ck = train([tiny_case], tmp_path / "aug.pt", epochs=1, batch_size=3, method="perturb-aug", settings={"p": "1"}, progress=False)
    assert sum(ck.meta["recipe_report"]["perturbed_copies"].values()) == len(x)
    assert ck.meta["recipe_report"]["held_out_for_evaluation"] == ["resize_kernel", "uint8_rounding"]


def test_perturb_aug_never_trains_on_what_the_rank_evaluates():
    from parity.preprocessing import perturb
    from parity.training.recipes.perturb_aug import HELD_OUT, TRAIN_RANGES, draw_parameter, perturbed_copies

    rng = np.random.default_rng(0)
    for name in TRAIN_RANGES:
        grid = set(perturb.get(name).values)  # every severity the rank (or a sweep) can ask for
        draws = [draw_parameter(name, rng) for _ in range(400)]
        assert not grid & set(draws), name
        assert perturb.get(name).family == "deployment"
    assert set(HELD_OUT) == {"resize_kernel", "uint8_rounding"} and not set(HELD_OUT) & set(TRAIN_RANGES)
    with pytest.raises(UsageError, match="held out for evaluation"):
        perturbed_copies([], None, ["resize_kernel"], seed=0)


def test_ema_is_the_exponential_average_of_the_iterates(tiny_case, tmp_path, monkeypatch):
    from parity.training.recipes import averaging

    snaps = []
    real = averaging._average

    def spy(ctx, **kw):
        snaps.append(ctx.model.head[2].bias.detach().clone())
        real(ctx, **kw)

    monkeypatch.setattr(averaging, "_average", spy)
    ck = train([tiny_case], tmp_path / "ema.pt", epochs=2, batch_size=3, method="ema", settings={"decay": "0.5"}, progress=False)
    expected = snaps[0]
    for s in snaps[1:]:
        expected = 0.5 * expected + 0.5 * s
    assert torch.allclose(torch.load(ck.path, weights_only=True)["head.2.bias"], expected, atol=1e-6)


def test_regmixup_loss_is_the_lambda_weighted_cross_entropy_of_the_mixed_batch():
    import torch.nn.functional as F

    from parity.training.recipes.regmixup import mixed_loss

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 1])
    perm = torch.tensor([3, 2, 1, 0])
    out = model(0.7 * x + 0.3 * x[perm])
    expected = 0.7 * F.cross_entropy(out, y) + 0.3 * F.cross_entropy(out, y[perm])
    assert torch.allclose(mixed_loss(model, x, y, 0.7, perm), expected)
    assert torch.allclose(mixed_loss(model, x, y, 1.0, perm), F.cross_entropy(model(x), y))  # lambda 1: the clean loss


def test_uat_ot_is_a_divergence_from_the_models_own_soft_predictions_and_ignores_labels(tiny_case):
    from types import SimpleNamespace

    import torch.nn.functional as F

    from parity.models.rowanchor import RowAnchorAdapter
    from parity.training.recipes.fgsm import fgsm_example
    from parity.training.recipes.uat import soft_divergence

    torch.manual_seed(0)
    adapter = RowAnchorAdapter()
    model = adapter.build().train()
    X = torch.randn(6, 3, 112, 288)
    hp = get_recipe("uat-ot").resolve({})
    extra = get_recipe("uat-ot").build(hp).extra_loss[0]

    def term(y, seed=3):
        ctx = SimpleNamespace(model=model, X=X, gen=torch.Generator().manual_seed(seed), pipeline=adapter.pipelines()["training"], scratch={})
        return float(extra(ctx, X[:2], y, None))

    cells = model(X[:2]).argmax(1)
    assert term(cells) == pytest.approx(term(torch.zeros_like(cells)))  # the labels are not read: true or garbage, the same term
    # the plain recomputation: same draws, soft targets from the model, FGSM against them, KL
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, len(X), (2,), generator=g)
    with torch.no_grad():
        soft = F.softmax(model(X[idx]), dim=1)
    adv = fgsm_example(model, X[idx], soft, adapter.pipelines()["training"], hp["epsilon"], hp["alpha"], g)
    out = model(adv)
    kl = (soft * (soft.log() - F.log_softmax(out, 1))).sum(1).mean()
    assert term(cells) == pytest.approx(hp["weight"] * float(kl), rel=1e-5)
    hard = F.cross_entropy(out, soft.argmax(1))  # what hard argmax targets would give instead
    assert float(soft_divergence(out, soft)) != pytest.approx(float(hard), rel=1e-3)


def test_uat_learns_from_an_unlabelled_suite_larger_than_the_labelled_one(tiny_case, tmp_path):
    from parity.cases.format import load_case
    from parity.cases.suites import train_suite, unlabelled_suite
    from parity.cases.synth import write_case

    from .conftest import _tiny_scenario

    assert len(unlabelled_suite()) == 2 * len(train_suite())
    assert not {s.seed for s in unlabelled_suite()} & {s.seed for s in train_suite()}
    unl = write_case(_tiny_scenario("unl", seed=91, frames=9), tmp_path / "unl", streams=("jpeg",), labels=False)
    assert load_case(unl).gt is None  # written without GT: nothing to read by mistake
    ck = train([tiny_case], tmp_path / "uat.pt", epochs=1, batch_size=3, method="uat-ot", unlabelled_cases=[unl], progress=False)
    rep = ck.meta["recipe_report"]
    assert rep["unlabelled_source"] == "unlabelled cases" and rep["unlabelled_frames"] == 9
