"""BnAuditCallback on a real Lightning `Trainer.fit` (CPU, a tiny model, a few steps)."""

import json
import logging
import os

import pytest
import torch
from conftest import read_activations
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

import bnaudit  # noqa: E402
from bnaudit.lightning import BnAuditCallback  # noqa: E402

STEPS = 4


class Finetune(pl.LightningModule):
    """A frozen backbone (requires_grad=False) and a trained head: Lightning's own
    `model.train()` at the start of the epoch puts the backbone's BatchNorm in train mode."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(6, 2))
        self.backbone.requires_grad_(False)

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


def fit(callback, steps=STEPS, validate=False):
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8 * steps, 4, generator=g), torch.randint(0, 2, (8 * steps,), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = Finetune()
    # With validation, Lightning's sanity check puts the model in eval mode and back.
    trainer.fit(module, loader, loader if validate else None)
    return module


def test_capture_without_frozen_installs_no_guard(tmp_path):
    path = tmp_path / "acts.safetensors"
    callback = BnAuditCallback(capture_path=str(path), capture_batches=3, stats_only=True)
    module = fit(callback)
    # The buggy run went through (no guard) and its first 3 batches were captured.
    assert int(module.backbone[1].num_batches_tracked) == STEPS
    tensors, meta = read_activations(path)
    assert meta["backbone.1"]["training_per_forward"] == [True] * 3
    assert sorted(k for k in tensors if k.startswith("backbone.1.batch_mean.")) == [f"backbone.1.batch_mean.{i}" for i in range(3)]
    assert not hasattr(module, "_bnaudit_guard")


def test_guard_raises_and_the_capture_is_still_written(tmp_path):
    path = tmp_path / "acts.safetensors"
    callback = BnAuditCallback(frozen=["backbone"], capture_path=str(path))  # guarded
    with pytest.raises(bnaudit.FrozenBatchNormError) as err:
        fit(callback)
    assert str(err.value).startswith("'backbone.1' ran a train-mode forward (frozen scope 'backbone'")
    # No validation, so Lightning never called .train(): the module was built in train mode.
    assert "backbone was already in train mode when the guard was installed" in str(err.value)
    line = next(i for i, t in enumerate(open(__file__), 1) if t.rstrip().endswith("# guarded"))
    assert f"(frozen since {os.path.relpath(__file__)}:{line})" in str(err.value)
    # Raised in the first forward, before it was recorded: an empty capture, written anyway.
    tensors, meta = read_activations(path)
    assert tensors == {}
    assert callback.guard is None


def test_record_mode_writes_the_report(tmp_path):
    report = tmp_path / "guard.json"
    callback = BnAuditCallback(frozen="backbone", on_violation="record", report_path=str(report))
    module = fit(callback, validate=True)
    assert int(module.backbone[1].num_batches_tracked) == STEPS
    events = json.loads(report.read_text())["events"]
    # The sanity check's 2 validation forwards ran in eval mode: no event.
    assert [e["forward"] for e in events] == list(range(2, 2 + STEPS))
    # Lightning put the model in eval mode for the sanity check (a call in its code, named by
    # file and line), then restored train mode by assigning `training`.
    assert events[0]["mode_call"]["training"] is False
    assert "lightning" in events[0]["mode_call"]["file"]
    assert "backbone was put back in train mode without .train() after" in events[0]["message"]
