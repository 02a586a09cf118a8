import json

import pytest
import torch

from parity.models.checkpoint import load_checkpoint
from parity.training.loop import train


def test_tiny_training_learns_and_writes_a_checkpoint(tiny_case, tmp_path):
    ck = train([tiny_case], tmp_path / "tiny.pt", eval_cases=[tiny_case], epochs=12, batch_size=4, lr=3e-3, progress=False)
    hist = ck.meta["loss_history"]
    assert hist[-1] < 0.6 * hist[0]  # it fits six frames
    state = torch.load(ck.path, weights_only=True)
    assert "head.2.weight" in state
    side = json.loads(ck.path.with_suffix(".json").read_text())
    assert side["method"] == "erm" and side["hyperparameters"]["seed"] == 0
    assert len(side["data"]["hash"]) == 64 and "git_sha" in side
    assert set(side["metrics"]) == {"held_out_training_pipeline", "held_out_vehicle_pipeline"}
    again = load_checkpoint(ck.path)
    assert again.sha256 == ck.sha256
    model = again.build_model()
    assert sum(p.numel() for p in model.parameters()) > 1e5


def test_training_is_seeded(tiny_case, tmp_path):
    a = train([tiny_case], tmp_path / "a.pt", epochs=2, batch_size=4, progress=False)
    b = train([tiny_case], tmp_path / "b.pt", epochs=2, batch_size=4, progress=False)
    assert a.sha256 == b.sha256


@pytest.mark.slow
def test_reference_model_detects_lanes_on_held_out_cases(tmp_path):
    """The full recipe behind `make replay`: ~4 min on 2 cores."""
    from parity.cases.suites import generate_suite

    train_cases = generate_suite("train", tmp_path / "train", progress=False)
    held_out = generate_suite("default", tmp_path / "default", progress=False)
    ck = train(train_cases, tmp_path / "ref.pt", eval_cases=held_out, progress=False)
    assert ck.meta["metrics"]["held_out_training_pipeline"]["overall"]["accuracy"] >= 0.9
