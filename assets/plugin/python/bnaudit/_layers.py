"""BatchNorm modules of a model, chosen by patterns (shared by the capture and the guard)."""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ._patterns import matches

__all__ = ["batchnorm_layers", "is_internal"]

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def batchnorm_layers(model: torch.nn.Module, patterns: Optional[Sequence[str]] = None) -> Dict[str, _BatchNorm]:
    """BatchNorm modules of ``model`` (1d, 2d, 3d, lazy and sync) by name, optionally only those
    some pattern covers."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm) and (patterns is None or any(matches(p, name) for p in patterns))
    }


def is_internal(filename: str) -> bool:
    """Whether a frame's file belongs to torch or to this package: call sites reported to the
    user are the first frames outside both."""
    path = os.path.abspath(filename)
    return path.startswith(_TORCH_DIR) or path.startswith(_OWN_DIR)
