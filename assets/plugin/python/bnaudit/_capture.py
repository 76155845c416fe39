"""Capture of BatchNorm activations (or only their batch statistics) into the activation file
that ``bnaudit explain A B --activations FILE`` reads (DESIGN: "Activation files")."""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

import torch
from safetensors.torch import save_file
from torch.nn.modules.batchnorm import _BatchNorm

from ._files import write_atomically
from ._layers import batchnorm_layers
from ._patterns import names

__all__ = ["METADATA_KEY", "BnCapture", "batch_statistics", "capture_bn"]

# The file's metadata key (DESIGN: "Activation files").
METADATA_KEY = "bnaudit"


def batch_statistics(x: torch.Tensor):
    """Per-channel mean, biased variance (the one that normalises) and count of a BatchNorm
    input ``N×C×…``, computed in float64 like PyTorch's CPU kernel accumulates."""
    x = x.detach().to(torch.float64)
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=dims)
    var = x.var(dim=dims, correction=0)
    count = x.numel() // x.shape[1]
    return mean.cpu(), var.cpu(), torch.tensor(count, dtype=torch.int64)


def _momentum(module: _BatchNorm) -> Optional[float]:
    return None if module.momentum is None else float(module.momentum)


def _chosen_layers(model: torch.nn.Module, layers: Optional[Sequence[str]]) -> Dict[str, _BatchNorm]:
    """The BatchNorm layers to record. Layers without running statistics replay nothing, so they
    are left out unless a pattern names the layer itself (not only a parent)."""
    return {
        name: module
        for name, module in batchnorm_layers(model, layers).items()
        if module.track_running_stats or (layers is not None and names(layers, name))
    }


class BnCapture:
    """Records BatchNorm layers forward by forward: inputs and outputs, or with ``stats_only``
    the per-forward batch statistics (f64 mean and biased variance, and the count).

    ``layers``: patterns choosing the layers (default: every BatchNorm layer with running
    statistics; one without them is recorded only when a pattern names it). ``outputs``: also
    record outputs (for ``best_mode``; default unless ``stats_only``). ``max_forwards``: stop
    recording a layer after that many forwards. ``max_samples``: record at most that many samples
    of each forward's batch (inputs and outputs only: batch statistics always cover the whole
    batch, which is what moved the running statistics). ``prefix``: prepended to layer names, so
    that they match the checkpoint's keys when it was saved from a wrapper (e.g. ``"module."``).
    Tensors are copied to the CPU at once, so later in-place operations cannot alter them.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        path: Optional[str] = None,
        layers: Optional[Sequence[str]] = None,
        *,
        stats_only: bool = False,
        outputs: Optional[bool] = None,
        max_forwards: Optional[int] = None,
        max_samples: Optional[int] = None,
        prefix: str = "",
    ) -> None:
        if stats_only and outputs:
            raise ValueError("a stats-only capture records no outputs (stats_only=True, outputs=True)")
        for option, value in (("max_forwards", max_forwards), ("max_samples", max_samples)):
            if value is not None and value < 1:
                raise ValueError(f"{option} must be at least 1, not {value}")
        layers = [layers] if isinstance(layers, str) else layers
        self.model = model
        self.path = path
        self.stats_only = stats_only
        self.outputs = not stats_only if outputs is None else outputs
        self.max_forwards = max_forwards
        self.max_samples = max_samples
        self.prefix = prefix
        self.modules = _chosen_layers(model, layers)
        if not self.modules:
            raise ValueError(f"no BatchNorm layer to capture matches {list(layers or [])!r}")
        self.tensors: Dict[str, torch.Tensor] = {}
        self.metadata: Dict[str, dict] = {}
        self._handles: List[torch.utils.hooks.RemovableHandle] = []

    def start(self) -> "BnCapture":
        """Installs the hooks (idempotent)."""
        if not self._handles:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_pre_hook(self._before(self.prefix + name)))
                self._handles.append(module.register_forward_hook(self._after(self.prefix + name)))
        return self

    def stop(self) -> None:
        """Removes the hooks; what was recorded stays."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "BnCapture":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        # Written even when training raised: the forwards up to the failure are the evidence.
        self.stop()
        if self.path is not None:
            self.save()

    def forwards(self, name: str) -> int:
        """Forwards recorded for layer ``name`` (with prefix)."""
        return len(self.metadata.get(name, {}).get("training_per_forward", []))

    def _full(self, name: str) -> bool:
        return self.max_forwards is not None and self.forwards(name) >= self.max_forwards

    def _before(self, name: str):
        def hook(module: _BatchNorm, args) -> None:
            if self._full(name):
                return
            meta = self.metadata.setdefault(
                name,
                {
                    "momentum": _momentum(module),
                    "eps": float(module.eps),
                    "training": bool(module.training),
                    "track_running_stats": bool(module.track_running_stats),
                    "training_per_forward": [],
                },
            )
            if "num_batches_tracked" not in meta and module.num_batches_tracked is not None:
                # The counter before the first captured forward: the cumulative average
                # (momentum=None) needs it to replay the updates.
                meta["num_batches_tracked"] = int(module.num_batches_tracked)

        return hook

    def _copy(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if self.max_samples is not None:
            t = t[: self.max_samples]
        return t.to("cpu", copy=True).contiguous()

    def _after(self, name: str):
        def hook(module: _BatchNorm, args, output) -> None:
            meta = self.metadata.get(name)
            if meta is None or self._full(name):
                return
            i = len(meta["training_per_forward"])
            meta["training_per_forward"].append(bool(module.training))
            if self.stats_only:
                mean, var, count = batch_statistics(args[0])
                self.tensors[f"{name}.batch_mean.{i}"] = mean
                self.tensors[f"{name}.batch_var.{i}"] = var
                self.tensors[f"{name}.batch_count.{i}"] = count
                return
            self.tensors[f"{name}.input.{i}"] = self._copy(args[0])
            if self.outputs:
                self.tensors[f"{name}.output.{i}"] = self._copy(output)

        return hook

    def save(self, path: Optional[str] = None) -> str:
        """Writes the activation file (safetensors, atomically) and returns its path."""
        path = path or self.path
        if path is None:
            raise ValueError("no path given to BnCapture.save")
        metadata = {}
        for name, meta in self.metadata.items():
            meta = dict(meta)
            per_forward = meta["training_per_forward"]
            # `training` is the mode of the first captured forward.
            meta["training"] = per_forward[0] if per_forward else meta["training"]
            metadata[name] = meta
        encoded = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
        write_atomically(path, lambda tmp: save_file(self.tensors, tmp, metadata=encoded))
        return path


def capture_bn(
    model: torch.nn.Module,
    path: Optional[str] = None,
    layers: Optional[Sequence[str]] = None,
    **options,
) -> BnCapture:
    """Context manager recording BatchNorm layers; writes ``path`` when the block ends, also when
    it raised. See :class:`BnCapture` for ``layers`` and the options (``stats_only``,
    ``outputs``, ``max_forwards``, ``max_samples``, ``prefix``)."""
    return BnCapture(model, path, layers, **options)
