"""A Rich progress bar that reads the logged metrics every N training steps instead of every step."""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class RichProgressBarEveryN(RichProgressBar):
    """Lightning's RichProgressBar, except that the metrics beside the bar (train/loss, ...) are refreshed
    every `metrics_every_n_steps` training batches. Reading them converts the logged device tensors to
    Python numbers, a host-device sync; done on every step it stalls the GPU queue once per step. The
    bar itself still advances every batch; validation and epoch ends refresh the metrics as before."""

    def __init__(self, metrics_every_n_steps: int = 20, **kwargs):
        if isinstance(metrics_every_n_steps, bool) or not isinstance(metrics_every_n_steps, int) \
                or metrics_every_n_steps < 1:
            raise ValueError(f"metrics_every_n_steps must be an integer >= 1, got {metrics_every_n_steps!r}")
        super().__init__(**kwargs)
        self.metrics_every_n_steps = metrics_every_n_steps
        self._skip_metrics = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._skip_metrics = (batch_idx + 1) % self.metrics_every_n_steps != 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._skip_metrics = False

    def _update_metrics(self, trainer, pl_module) -> None:
        if not self._skip_metrics:
            super()._update_metrics(trainer, pl_module)
