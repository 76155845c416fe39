"""A real fine-tuning run with the classic bug (backbone frozen by requires_grad, put back in
train mode by model.train()), captured by the installed plugin; the installed binary's
`explain` must account for B from the capture, and `check` must flag the backbone."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import bnaudit

STEPS = 4


def network():
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    head = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    model = nn.Sequential()
    model.add_module("backbone", backbone)
    model.add_module("head", head)
    # "Pretraining": some train-mode forwards so that A's statistics are not the defaults.
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8))
    return model


def fine_tune(model, tmp_path, **capture):
    """The buggy run: A, STEPS head-only steps in train mode under a capture, B."""
    a, b, acts = (str(tmp_path / n) for n in ("A.safetensors", "B.safetensors", "acts.safetensors"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a)
    model.backbone.requires_grad_(False)
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    with bnaudit.capture_bn(model, acts, ["backbone"], **capture):
        for _ in range(STEPS):
            model.train()
            x = torch.randn(8, 3, 8, 8, generator=g) * 2 + 0.5  # a shifted domain
            y = torch.randint(0, 3, (8,), generator=g)
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, b)
    return a, b, acts


def test_explain_accounts_for_b_from_the_capture(tmp_path):
    a, b, acts = fine_tune(network(), tmp_path)
    report = bnaudit.explain(a, b, acts)
    assert sorted(layer.name for layer in report.layers) == ["backbone.1", "backbone.4"]
    for layer in report.layers:
        assert layer.replay.batches == STEPS, layer.name
        assert layer.replay.explains_b is True, layer.replay
    check = bnaudit.check(a, b, frozen=["backbone"])
    assert check.passed is False
    assert {(v.layer, v.kind) for v in check.violations if v.kind == "frozen_stats_drift"} == {
        ("backbone.1", "frozen_stats_drift"),
        ("backbone.4", "frozen_stats_drift"),
    }
    drifted = {layer.name: layer.nbt_delta for layer in check.diff.layers if layer.status == "frozen_stats_drift"}
    assert drifted == {"backbone.1": STEPS, "backbone.4": STEPS}


def test_stats_only_replay_equals_the_full_captures(tmp_path):
    full_dir, stats_dir = tmp_path / "full", tmp_path / "stats"
    full_dir.mkdir()
    stats_dir.mkdir()
    full = bnaudit.explain(*fine_tune(network(), full_dir))
    a, b, acts = fine_tune(network(), stats_dir, stats_only=True)
    stats = bnaudit.explain(a, b, acts)
    for f, s in zip(full.layers, stats.layers):
        assert f.name == s.name
        assert s.replay.explains_b is True
        assert s.replay.batches == f.replay.batches
        assert s.replay.max_abs_err_mean == pytest.approx(f.replay.max_abs_err_mean, abs=1e-6)
        assert s.replay.max_abs_err_var == pytest.approx(f.replay.max_abs_err_var, abs=1e-6)
