"""Lightning callback: the frozen-BatchNorm guard and the activation capture in ``Trainer.fit``.

    from bnaudit.lightning import BnAuditCallback

    trainer = Trainer(callbacks=[BnAuditCallback(frozen=["backbone"])])
"""

from __future__ import annotations

try:
    import lightning.pytorch as _pl
except ImportError:  # the older package name
    try:
        import pytorch_lightning as _pl
    except ImportError as e:
        raise ImportError("bnaudit.lightning needs Lightning: pip install lightning") from e

from ._fit import FitAudit

__all__ = ["BnAuditCallback"]


class BnAuditCallback(FitAudit, _pl.Callback):
    """Guard and capture for a LightningModule; the options are those of
    :class:`bnaudit._fit.FitAudit`: ``BnAuditCallback(frozen=None, capture_path=None, *,
    capture_layers=None, capture_batches=3, stats_only=False, max_samples=None,
    on_violation="raise", report_path=None)``."""

    def on_fit_start(self, trainer, pl_module) -> None:
        self.guard_model(pl_module)

    # After the sanity-check validation: only training batches are captured.
    def on_train_start(self, trainer, pl_module) -> None:
        self.start_capture(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batch_done()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.finish()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.finish()
