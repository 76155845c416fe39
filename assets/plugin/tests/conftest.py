"""Shared fixtures. The tests run against the installed package (`pip install ./assets/plugin`),
never the source directory: the conftest refuses a `bnaudit` imported from `python/`."""

import json
import os
from pathlib import Path

import pytest

import bnaudit

SOURCE = Path(__file__).resolve().parents[1] / "python"
REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "assets" / "demo"


def pytest_configure(config):
    here = Path(bnaudit.__file__).resolve()
    if SOURCE in here.parents:
        raise pytest.UsageError(f"bnaudit imported from the source tree ({here}); pip install ./assets/plugin first")


def small_model():
    """A backbone (conv, BatchNorm2d) and a head (linear, BatchNorm1d with momentum=None)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5, momentum=None))
    return nn.Sequential(backbone, head)


def read_activations(path):
    from safetensors import safe_open

    with safe_open(os.fspath(path), "pt") as f:
        meta = json.loads(f.metadata()[bnaudit.METADATA_KEY])
        return {k: f.get_tensor(k) for k in f.keys()}, meta
