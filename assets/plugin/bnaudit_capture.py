"""bnaudit's PyTorch plugin: capture BatchNorm activations for `bnaudit explain`, and guard
frozen BatchNorm layers in training loops.

A single file that needs only ``torch`` and ``safetensors``; copy it next to your training
script.

Capture: record chosen BatchNorm layers' inputs and outputs while the model runs, with each
layer's ``momentum``, ``eps``, ``training`` and ``track_running_stats``, and write the
activation file that ``bnaudit explain A B --activations FILE`` reads::

    from bnaudit_capture import capture_bn

    save_file(model.state_dict(), "A.safetensors")
    with capture_bn(model, "acts.safetensors", layers=["backbone"]):
        for x, _ in itertools.islice(loader, 3):
            model(x)
    save_file(model.state_dict(), "B.safetensors")

Guard: raise at the first forward in which a BatchNorm layer of a frozen sub-model runs in
train mode, before its running statistics move::

    from bnaudit_capture import assert_frozen_bn

    assert_frozen_bn(model, ["backbone"])
    model.train()      # flips the frozen backbone's BatchNorm layers back to train mode
    model(x)           # FrozenBatchNormError: 'backbone.1' ... ran forward in train mode

Patterns are dot-separated module paths as in bnaudit's ``--frozen``: ``*`` matches within
one segment, ``**`` any number of segments, ``[12]`` a character class; a pattern covers a
module when it matches the module's path or any prefix of it.

With PyTorch Lightning installed, ``BnAuditCallback`` installs the guard (and optionally a
capture of the first training batches) on the LightningModule.
"""

from __future__ import annotations

import json
import re
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from safetensors.torch import save_file
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "BnCapture",
    "FrozenBatchNormError",
    "FrozenBnGuard",
    "assert_frozen_bn",
    "batchnorm_layers",
    "capture_bn",
    "matches",
]

# The file's metadata key (DESIGN: "Activation files").
METADATA_KEY = "bnaudit"


def _segment_regex(segment: str) -> str:
    """One path segment: `*` and `?` never cross a dot, `[...]` is a character class."""
    out, i = "", 0
    while i < len(segment):
        ch = segment[i]
        close = segment.find("]", i + 2) if ch == "[" else -1
        if ch == "*":
            out += "[^.]*"
        elif ch == "?":
            out += "[^.]"
        elif close != -1:
            body = segment[i + 1 : close]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = close
        else:
            out += re.escape(ch)
        i += 1
    return out


def _pattern_regex(pattern: str) -> "re.Pattern[str]":
    segments = pattern.split(".")
    # A trailing `**` adds nothing: a pattern already covers everything under what it matches.
    while len(segments) > 1 and segments[-1] == "**":
        segments.pop()
    if segments == ["**"]:
        return re.compile(r".*\Z")
    # `**` spans zero or more whole segments, each with its dot.
    body = "".join(r"(?:[^.]+\.)*" if s == "**" else _segment_regex(s) + r"\." for s in segments)
    return re.compile(body[: -len(r"\.")] + r"\Z")


def matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` covers module ``name``: it matches the path or a prefix of it."""
    regex = _pattern_regex(pattern)
    segments = name.split(".")
    return any(regex.match(".".join(segments[:k])) for k in range(1, len(segments) + 1))


def batchnorm_layers(model: torch.nn.Module, patterns: Optional[Sequence[str]] = None) -> Dict[str, _BatchNorm]:
    """BatchNorm modules of ``model`` (1d, 2d, 3d, lazy and sync) by name, optionally only those
    some pattern covers."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm) and (patterns is None or any(matches(p, name) for p in patterns))
    }


def _momentum(module: _BatchNorm) -> Optional[float]:
    return None if module.momentum is None else float(module.momentum)


class BnCapture:
    """Records BatchNorm layers' inputs and outputs, forward by forward.

    ``layers``: patterns choosing the layers (all BatchNorm layers by default).
    ``outputs``: also record outputs (needed for ``best_mode``). ``max_forwards``: stop
    recording a layer after that many forwards. ``prefix``: prepended to layer names, so that
    they match the checkpoint's keys when it was saved from a wrapper (e.g. ``"module."``).
    Tensors are copied to the CPU at once, so later in-place operations cannot alter them.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        path: Optional[str] = None,
        layers: Optional[Sequence[str]] = None,
        *,
        outputs: bool = True,
        max_forwards: Optional[int] = None,
        prefix: str = "",
    ) -> None:
        self.model = model
        self.path = path
        self.outputs = outputs
        self.max_forwards = max_forwards
        self.prefix = prefix
        self.modules = batchnorm_layers(model, layers)
        if not self.modules:
            raise ValueError(f"no BatchNorm layer matches {list(layers or [])!r}")
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
        self.stop()
        if exc_type is None and self.path is not None:
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

    def _after(self, name: str):
        def hook(module: _BatchNorm, args, output) -> None:
            meta = self.metadata.get(name)
            if meta is None or self._full(name):
                return
            i = len(meta["training_per_forward"])
            meta["training_per_forward"].append(bool(module.training))
            self.tensors[f"{name}.input.{i}"] = args[0].detach().to("cpu", copy=True).contiguous()
            if self.outputs:
                self.tensors[f"{name}.output.{i}"] = output.detach().to("cpu", copy=True).contiguous()

        return hook

    def save(self, path: Optional[str] = None) -> str:
        """Writes the activation file (safetensors, DESIGN's format) and returns its path."""
        path = path or self.path
        if path is None:
            raise ValueError("no path given to BnCapture.save")
        metadata = {}
        for name, meta in self.metadata.items():
            meta = dict(meta)
            per_forward = meta["training_per_forward"]
            # `training` is the mode of every captured forward when they agree, else the first's.
            meta["training"] = per_forward[0] if per_forward else meta["training"]
            metadata[name] = meta
        save_file(self.tensors, path, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
        return path


def capture_bn(
    model: torch.nn.Module,
    path: Optional[str] = None,
    layers: Optional[Sequence[str]] = None,
    **options,
) -> BnCapture:
    """Context manager recording BatchNorm inputs and outputs; writes ``path`` on a clean exit.

    See :class:`BnCapture` for ``layers`` and the options.
    """
    return BnCapture(model, path, layers, **options)


class FrozenBatchNormError(RuntimeError):
    """A BatchNorm layer of a frozen sub-model was about to run forward in train mode."""


class FrozenBnGuard:
    """The forward pre-hooks installed by :func:`assert_frozen_bn`; ``remove()`` uninstalls."""

    def __init__(self, model: torch.nn.Module, patterns: Optional[Sequence[str]]) -> None:
        self.patterns = None if patterns is None else list(patterns)
        self.layers = batchnorm_layers(model, self.patterns)
        self._model = model
        self._handles = [module.register_forward_pre_hook(self._hook(name)) for name, module in self.layers.items()]

    def _frozen(self, module: _BatchNorm) -> bool:
        if self.patterns is not None:
            return True
        params = list(module.parameters(recurse=False))
        return bool(params) and not any(p.requires_grad for p in params)

    def _hook(self, name: str):
        def hook(module: _BatchNorm, args) -> None:
            # Without running statistics train and eval mode compute the same thing.
            if module.training and module.track_running_stats and self._frozen(module):
                scope = (
                    "frozen scope " + ", ".join(repr(p) for p in self.patterns)
                    if self.patterns is not None
                    else "its parameters have requires_grad=False"
                )
                raise FrozenBatchNormError(
                    f"BatchNorm layer {name!r} ({scope}) ran forward in train mode: its running "
                    f"statistics would move (num_batches_tracked={int(module.num_batches_tracked)}). "
                    "Call .eval() on the frozen sub-model after every model.train(), e.g. by "
                    "overriding train() in the parent module."
                )

        return hook

    def remove(self) -> None:
        """Uninstalls the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if getattr(self._model, "_bnaudit_guard", None) is self:
            del self._model._bnaudit_guard


def assert_frozen_bn(model: torch.nn.Module, patterns: Optional[Iterable[str]] = None) -> FrozenBnGuard:
    """Raise :class:`FrozenBatchNormError` at the first forward in which a BatchNorm layer of a
    frozen sub-model runs in train mode with running statistics, before they move.

    ``patterns`` name the frozen sub-models (bnaudit's pattern syntax). Without patterns a layer
    is frozen when all its affine parameters have ``requires_grad=False`` at the time of the
    forward. The hooks are installed once per model: calling again with the same patterns
    returns the installed guard; other patterns replace it.
    """
    patterns = None if patterns is None else list(patterns)
    guard = getattr(model, "_bnaudit_guard", None)
    if guard is not None:
        if guard.patterns == patterns:
            return guard
        guard.remove()
    guard = FrozenBnGuard(model, patterns)
    model._bnaudit_guard = guard
    return guard


try:  # Lightning is optional: the callback exists only where it can be used.
    import lightning.pytorch as _pl
except ImportError:
    try:
        import pytorch_lightning as _pl
    except ImportError:
        _pl = None

if _pl is not None:

    class BnAuditCallback(_pl.Callback):
        """Lightning callback: installs :func:`assert_frozen_bn` on the LightningModule when
        fitting starts, and with ``capture_path`` records the first ``capture_batches``
        training batches' BatchNorm activations to that file."""

        def __init__(
            self,
            frozen: Optional[Sequence[str]] = None,
            capture_path: Optional[str] = None,
            capture_layers: Optional[Sequence[str]] = None,
            capture_batches: int = 3,
        ) -> None:
            super().__init__()
            self.frozen = frozen
            self.capture_path = capture_path
            self.capture_layers = capture_layers
            self.capture_batches = capture_batches
            self.guard: Optional[FrozenBnGuard] = None
            self.capture: Optional[BnCapture] = None

        def on_fit_start(self, trainer, pl_module) -> None:
            self.guard = assert_frozen_bn(pl_module, self.frozen)
            if self.capture_path is not None:
                self.capture = BnCapture(pl_module, self.capture_path, self.capture_layers).start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.capture is not None and batch_idx + 1 >= self.capture_batches:
                self.capture.stop()
                self.capture.save()
                self.capture = None

        def on_fit_end(self, trainer, pl_module) -> None:
            if self.capture is not None:
                self.capture.stop()
                self.capture.save()
                self.capture = None
            if self.guard is not None:
                self.guard.remove()
                self.guard = None

    __all__.append("BnAuditCallback")
