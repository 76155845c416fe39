"""bnaudit from Python: the ``bnaudit`` command's reports, and the PyTorch plugin that captures
BatchNorm activations and guards frozen BatchNorm layers in training loops.

Without torch: ``check``, ``diff``, ``ls``, ``explain`` run the installed binary and return its
JSON report; ``matches`` is the ``--frozen`` pattern syntax. With ``bnaudit[torch]``:
``capture_bn``/``BnCapture`` write activation files, ``assert_frozen_bn`` guards frozen layers;
``bnaudit.lightning.BnAuditCallback`` and ``bnaudit.transformers.BnAuditTrainerCallback`` do
both in Lightning and Hugging Face training loops.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._cli import BnauditError, Report, binary, check, diff, explain, ls
from ._patterns import matches

try:
    __version__ = version("bnaudit")
except PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "unknown"

# The torch side, imported on first use so that the command's wrappers need no torch.
_TORCH_NAMES = {
    "BnCapture": "._capture",
    "METADATA_KEY": "._capture",
    "batch_statistics": "._capture",
    "capture_bn": "._capture",
    "FrozenBatchNormError": "._guard",
    "FrozenBatchNormWarning": "._guard",
    "FrozenBnGuard": "._guard",
    "assert_frozen_bn": "._guard",
    "batchnorm_layers": "._layers",
}

__all__ = ["BnauditError", "Report", "binary", "check", "diff", "explain", "ls", "matches", *_TORCH_NAMES]


def __getattr__(name: str):
    module = _TORCH_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'bnaudit' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module, __name__), name)
    except ImportError as e:
        raise ImportError(f"bnaudit.{name} needs torch and safetensors: pip install 'bnaudit[torch]' ({e})") from e
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
