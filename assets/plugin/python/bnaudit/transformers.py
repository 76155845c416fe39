"""Hugging Face ``transformers.Trainer`` callback: the frozen-BatchNorm guard and the
activation capture, as :class:`bnaudit.lightning.BnAuditCallback` does for Lightning.

    from bnaudit.transformers import BnAuditTrainerCallback

    Trainer(model, args, callbacks=[BnAuditTrainerCallback(frozen=["backbone"])])
"""

from __future__ import annotations

try:
    from transformers import TrainerCallback as _TrainerCallback
except ImportError as e:
    raise ImportError("bnaudit.transformers needs transformers: pip install transformers") from e

from ._fit import FitAudit

__all__ = ["BnAuditTrainerCallback"]


class BnAuditTrainerCallback(FitAudit, _TrainerCallback):
    """Guard and capture for the Trainer's model; the options are :class:`FitAudit`'s (the same
    as ``BnAuditCallback``'s). A batch is an optimizer step (``on_step_end``): with gradient
    accumulation, a captured batch holds that many forwards."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.guard_model(model)
        self.start_capture(model)

    def on_step_end(self, args, state, control, **kwargs):
        self.batch_done()

    def on_train_end(self, args, state, control, **kwargs):
        self.finish()
