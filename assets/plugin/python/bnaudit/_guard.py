"""The frozen-BatchNorm guard: stop (or report) a frozen sub-model's BatchNorm layer running a
train-mode forward, and name the ``.train()`` call that put it there."""

from __future__ import annotations

import json
import linecache
import os
import sys
import threading
import warnings
import weakref
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Set

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ._files import write_atomically
from ._layers import batchnorm_layers, is_internal
from ._patterns import covering_prefix

__all__ = ["CallSite", "FrozenBatchNormError", "FrozenBatchNormWarning", "FrozenBnGuard", "assert_frozen_bn"]

ON_VIOLATION = ("raise", "warn", "record")


class FrozenBatchNormError(RuntimeError):
    """A BatchNorm layer of a frozen sub-model was about to run forward in train mode."""


class FrozenBatchNormWarning(UserWarning):
    """``on_violation="warn"``: a frozen BatchNorm layer ran forward in train mode."""


@dataclass(frozen=True)
class CallSite:
    """A line of the user's code (the first frame outside torch and bnaudit)."""

    file: str
    line: int
    code: str

    @staticmethod
    def of(frame) -> "CallSite":
        file, line = frame.f_code.co_filename, frame.f_lineno
        return CallSite(file, line, linecache.getline(file, line).strip())

    def __str__(self) -> str:
        file = self.file
        try:
            relative = os.path.relpath(file)
            if not relative.startswith(os.pardir):
                file = relative
        except ValueError:  # another drive (Windows)
            pass
        return f"{file}:{self.line}"

    def quoted(self) -> str:
        return f"`{self.code}` at {self}" if self.code else f"the call at {self}"


def user_frame(frame) -> Optional[CallSite]:
    """The first frame from ``frame`` outwards that is outside torch and bnaudit."""
    while frame is not None and is_internal(frame.f_code.co_filename):
        frame = frame.f_back
    return None if frame is None else CallSite.of(frame)


@dataclass(frozen=True)
class ModeCall:
    """The last outermost ``Module.train(mode)`` that set a module's mode: where it was called
    and, when through ``Module.apply``, the user's line that called ``apply``."""

    training: bool
    site: Optional[CallSite]
    via: Optional[CallSite]

    def describe(self) -> str:
        if self.site is None:
            return "a `.train()` call outside Python code"
        text = self.site.quoted()
        if self.via is not None and (self.via.file, self.via.line) != (self.site.file, self.site.line):
            text += f" via {self.via.quoted()}"
        return text


def _mode_call(training: bool) -> ModeCall:
    """Where the current ``train()`` call comes from: the innermost user frame, and the next one
    when torch's ``Module.apply`` lies between them."""
    frame = sys._getframe(2)
    site, through_apply = None, False
    while frame is not None:
        internal = is_internal(frame.f_code.co_filename)
        if site is None:
            if not internal:
                site = CallSite.of(frame)
        elif internal:
            through_apply |= frame.f_code.co_name == "apply"
        else:
            return ModeCall(training, site, CallSite.of(frame) if through_apply else None)
        frame = frame.f_back
    return ModeCall(training, site, None)


class _ModeRecorder:
    """Wraps ``torch.nn.Module.train`` while at least one guard is installed, recording for every
    module the outermost call that last set its mode (``eval()`` goes through ``train(False)``).
    Nested calls (a module's ``train`` recursing into its children) record nothing of their own."""

    def __init__(self) -> None:
        self.calls: "weakref.WeakKeyDictionary[torch.nn.Module, ModeCall]" = weakref.WeakKeyDictionary()
        self._local = threading.local()
        self._users = 0
        self._original = None
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._original = torch.nn.Module.train
                recorder, original = self, self._original

                def train(module, mode=True):
                    depth = getattr(recorder._local, "depth", 0)
                    if depth == 0 and isinstance(mode, bool):
                        call = _mode_call(mode)
                        for m in module.modules():
                            recorder.calls[m] = call
                    recorder._local.depth = depth + 1
                    try:
                        return original(module, mode)
                    finally:
                        recorder._local.depth = depth

                train.__doc__ = original.__doc__
                train._bnaudit_recorder = True
                torch.nn.Module.train = train

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                # Only undo our own wrapper: someone may have wrapped it again since.
                if getattr(torch.nn.Module.train, "_bnaudit_recorder", False):
                    torch.nn.Module.train = self._original
                self._original = None
                self.calls = weakref.WeakKeyDictionary()


_RECORDER = _ModeRecorder()


class FrozenBnGuard:
    """The forward pre-hooks installed by :func:`assert_frozen_bn`.

    ``events`` lists every violation seen (all modes); ``report()`` and ``write_report(path)``
    give them as JSON. ``remove()`` (or leaving the ``with`` block) uninstalls the hooks.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        patterns: Optional[Iterable[str]],
        on_violation: str = "raise",
        *,
        _since: Optional[CallSite] = None,
    ) -> None:
        if on_violation not in ON_VIOLATION:
            raise ValueError(f"on_violation must be one of {ON_VIOLATION}, not {on_violation!r}")
        self.patterns = None if patterns is None else list(patterns)
        self.on_violation = on_violation
        self.layers = batchnorm_layers(model, self.patterns)
        if self.patterns is not None and not self.layers:
            raise ValueError(f"no BatchNorm layer is covered by {self.patterns!r}")
        self.since = _since or user_frame(sys._getframe(1))
        self.events: List[dict] = []
        self._forwards: Dict[str, int] = {}
        self._warned: Set[str] = set()
        self._model = model
        self._training_at_install = {name: bool(m.training) for name, m in self.layers.items()}
        _RECORDER.acquire()
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in self.layers.items()]

    def __enter__(self) -> "FrozenBnGuard":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.remove()

    def _frozen(self, module: _BatchNorm) -> bool:
        if self.patterns is not None:
            return True
        params = list(module.parameters(recurse=False))
        return bool(params) and not any(p.requires_grad for p in params)

    def _owner(self, name: str) -> str:
        """The frozen sub-model holding layer ``name``: the shortest prefix a pattern covers."""
        return (covering_prefix(self.patterns, name) if self.patterns is not None else None) or name

    def _cause(self, name: str, module: _BatchNorm) -> tuple:
        """The last recorded mode call reaching the layer, and the sentence naming the cause."""
        owner = self._owner(name)
        shown = owner or "the model"
        call = _RECORDER.calls.get(module)
        if call is not None and call.training:
            return call, f"{shown} was put in train mode by {call.describe()}"
        if call is None and self._training_at_install[name]:
            return None, (
                f"{shown} was already in train mode when the guard was installed (modules start in "
                "train mode) and no .eval() call reached it since"
            )
        after = "" if call is None else f" after {call.describe()} put it in eval mode"
        return call, (
            f"{shown} was put back in train mode without .train(){after}, by assigning `module.training` "
            "(as Lightning does when it restores modes after validation)"
        )

    def _hook(self, name: str):
        def hook(module: _BatchNorm, args) -> None:
            forward = self._forwards.get(name, 0)
            self._forwards[name] = forward + 1
            # Without running statistics train and eval mode compute the same thing.
            if not (module.training and module.track_running_stats and self._frozen(module)):
                return
            call, cause = self._cause(name, module)
            scope = (
                "frozen scope " + ", ".join(repr(p) for p in self.patterns)
                if self.patterns is not None
                else "its parameters have requires_grad=False"
            )
            counter = module.num_batches_tracked
            counter = None if counter is None else int(counter)
            since = f" (frozen since {self.since})" if self.since is not None else ""
            message = (
                f"{name!r} ran a train-mode forward ({scope}; num_batches_tracked={counter}, its running "
                f"statistics would move); {cause}{since}. Call .eval() on the frozen sub-model after "
                "every .train(), e.g. by overriding train() in the parent module."
            )
            self.events.append(
                {
                    "layer": name,
                    "frozen_module": self._owner(name),
                    "forward": forward,
                    "num_batches_tracked": counter,
                    "mode_call": None if call is None else _call_json(call),
                    "frozen_since": None if self.since is None else asdict(self.since),
                    "message": message,
                }
            )
            if self.on_violation == "raise":
                raise FrozenBatchNormError(message)
            if self.on_violation == "warn" and name not in self._warned:
                self._warned.add(name)
                warnings.warn(FrozenBatchNormWarning(message), stacklevel=2)

        return hook

    def report(self) -> dict:
        """The guard's findings: the scope, the mode, and every violation event."""
        return {
            "frozen": self.patterns,
            "on_violation": self.on_violation,
            "frozen_since": None if self.since is None else asdict(self.since),
            "layers": sorted(self.layers),
            "forwards": dict(sorted(self._forwards.items())),
            "events": self.events,
        }

    def write_report(self, path: str) -> str:
        """Writes :meth:`report` as JSON to ``path`` (atomically) and returns the path."""
        text = json.dumps(self.report(), indent=2) + "\n"

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.write(text)

        write_atomically(path, write)
        return path

    def remove(self) -> None:
        """Uninstalls the hooks (idempotent); the events stay."""
        if not self._handles:
            return
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        _RECORDER.release()
        if getattr(self._model, "_bnaudit_guard", None) is self:
            del self._model._bnaudit_guard


def _call_json(call: ModeCall) -> dict:
    """A mode call for the report: ``training`` (what it set), the site, and ``via``."""
    site = {} if call.site is None else asdict(call.site)
    return {"training": call.training, **site, "via": None if call.via is None else asdict(call.via)}


def assert_frozen_bn(
    model: torch.nn.Module,
    patterns: Optional[Iterable[str]] = None,
    on_violation: str = "raise",
    *,
    _since: Optional[CallSite] = None,
) -> FrozenBnGuard:
    """Guard the BatchNorm layers of a model's frozen sub-models against train-mode forwards.

    ``patterns`` name the frozen sub-models (bnaudit's ``--frozen`` syntax). Without patterns a
    layer is frozen when all its affine parameters have ``requires_grad=False`` at the time of
    the forward. From now on, every ``.train()``/``.eval()`` call is recorded, so that a violation
    names the call that put the frozen layer in train mode.

    ``on_violation``: ``"raise"`` raises :class:`FrozenBatchNormError` before the running
    statistics move; ``"warn"`` warns once per layer (:class:`FrozenBatchNormWarning`) and lets
    training go on; ``"record"`` only collects the events (``guard.events``,
    ``guard.write_report(path)``).

    The hooks are installed once per model: calling again with the same patterns and mode returns
    the installed guard; others replace it. Remove with ``guard.remove()`` or use the guard as a
    context manager. (``_since``: the call site reported as "frozen since", for the callbacks.)
    """
    patterns = None if patterns is None else ([patterns] if isinstance(patterns, str) else list(patterns))
    guard = getattr(model, "_bnaudit_guard", None)
    if guard is not None:
        if guard.patterns == patterns and guard.on_violation == on_violation:
            return guard
        guard.remove()
    guard = FrozenBnGuard(model, patterns, on_violation, _since=_since or user_frame(sys._getframe(1)))
    model._bnaudit_guard = guard
    return guard
