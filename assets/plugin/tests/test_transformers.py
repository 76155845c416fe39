"""BnAuditTrainerCallback's hooks. transformers is not installed in CI (its Trainer would also
need accelerate), so the callback is driven by hand over a stand-in `transformers` module that
provides only the base class, in the order Trainer calls the hooks."""

import importlib
import sys
import types

import pytest
import torch
from conftest import read_activations, small_model

import bnaudit


@pytest.fixture
def callback_module(monkeypatch):
    try:
        import transformers  # noqa: F401
    except ImportError:
        fake = types.ModuleType("transformers")
        fake.TrainerCallback = type("TrainerCallback", (), {})
        monkeypatch.setitem(sys.modules, "transformers", fake)
    monkeypatch.delitem(sys.modules, "bnaudit.transformers", raising=False)
    return importlib.import_module("bnaudit.transformers")


def test_capture_without_guard_then_guard(callback_module, tmp_path):
    path = tmp_path / "acts.safetensors"
    m = small_model().train()
    m[0].requires_grad_(False)
    cb = callback_module.BnAuditTrainerCallback(capture_path=str(path), capture_layers=["0"], capture_batches=2)
    assert isinstance(cb, sys.modules["transformers"].TrainerCallback)
    cb.on_train_begin(None, None, None, model=m)
    for _ in range(3):
        m(torch.randn(2, 3, 6, 6))  # no guard: the buggy forwards run
        cb.on_step_end(None, None, None)
    cb.on_train_end(None, None, None)
    tensors, meta = read_activations(path)
    assert sorted(tensors) == ["0.1.input.0", "0.1.input.1", "0.1.output.0", "0.1.output.1"]
    assert int(m[0][1].num_batches_tracked) == 3

    guarded = callback_module.BnAuditTrainerCallback(frozen=["0"])
    guarded.on_train_begin(None, None, None, model=m)
    with pytest.raises(bnaudit.FrozenBatchNormError):
        m(torch.randn(2, 3, 6, 6))
    guarded.on_train_end(None, None, None)
    assert not hasattr(m, "_bnaudit_guard")
