"""What the training-loop callbacks (Lightning, Hugging Face) share: the guard when a frozen
scope is given, and a capture of the first training batches when a path is given."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import torch

from ._capture import BnCapture
from ._guard import FrozenBnGuard, assert_frozen_bn, user_frame


class FitAudit:
    """Guard and capture of one training run.

    ``frozen``: patterns of the frozen sub-models; the guard (:func:`bnaudit.assert_frozen_bn`
    with ``on_violation``) is installed only when given. ``capture_path``: record the first
    ``capture_batches`` training batches' BatchNorm layers (``capture_layers``, ``stats_only``,
    ``max_samples`` as in :func:`bnaudit.capture_bn`) to that file; it is written also when
    training raises. ``report_path``: write the guard's JSON report there when training ends.

    The callbacks call ``guard_model`` at fit start,
    ``start_capture`` when training batches begin, ``batch_done`` after each, ``finish`` at the
    end (also on an exception, so that the capture and the report are written)."""

    def __init__(
        self,
        frozen: Optional[Sequence[str]] = None,
        capture_path: Optional[str] = None,
        *,
        capture_layers: Optional[Sequence[str]] = None,
        capture_batches: int = 3,
        stats_only: bool = False,
        max_samples: Optional[int] = None,
        on_violation: str = "raise",
        report_path: Optional[str] = None,
    ) -> None:
        if capture_batches < 1:
            raise ValueError(f"capture_batches must be at least 1, not {capture_batches}")
        self.frozen = [frozen] if isinstance(frozen, str) else frozen
        self.capture_path = capture_path
        self.capture_layers = capture_layers
        self.capture_batches = capture_batches
        self.stats_only = stats_only
        self.max_samples = max_samples
        self.on_violation = on_violation
        self.report_path = report_path
        self.guard: Optional[FrozenBnGuard] = None
        self.capture: Optional[BnCapture] = None
        self._batches = 0
        # The guard is installed from the training loop's code; "frozen since" names the line
        # that asked for it.
        self._since = user_frame(sys._getframe(1))

    def guard_model(self, model: torch.nn.Module) -> None:
        # No frozen scope, no guard: a run captured to diagnose the bug must be allowed to run.
        if self.frozen is not None and self.guard is None:
            self.guard = assert_frozen_bn(model, self.frozen, self.on_violation, _since=self._since)

    def start_capture(self, model: torch.nn.Module) -> None:
        if self.capture_path is not None and self.capture is None and self._batches == 0:
            self.capture = BnCapture(
                model,
                self.capture_path,
                self.capture_layers,
                stats_only=self.stats_only,
                max_samples=self.max_samples,
            ).start()

    def batch_done(self) -> None:
        if self.capture is None:
            return
        self._batches += 1
        if self._batches >= self.capture_batches:
            self._save_capture()

    def _save_capture(self) -> None:
        if self.capture is not None:
            self.capture.stop()
            self.capture.save()
            self.capture = None

    def finish(self) -> None:
        self._save_capture()
        if self.guard is not None:
            if self.report_path is not None:
                self.guard.write_report(self.report_path)
            self.guard.remove()
            self.guard = None
