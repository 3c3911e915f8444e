"""A Rich progress bar that reads the logged metrics every N training steps instead of every step, and says how far
a run bounded by `max_steps` has come."""

from __future__ import annotations

import time

from pytorch_lightning.callbacks import RichProgressBar

from guidelab.evaluation.guided_sweep import draws_live


class RichProgressBarEveryN(RichProgressBar):
    """Lightning's RichProgressBar, except that the metrics beside the bar are read every
    `metrics_every_n_steps` optimizer steps. Reading a logged device tensor as a Python number is a
    host-device sync; done every step it stalls the GPU queue once per step.

    Lightning itself converts every metric logged with `prog_bar=True` at the end of every batch, so the
    modules log their per-step training metrics without it, and this bar shows the ones named in
    `step_metrics` (read from `trainer.callback_metrics`, which keeps them as tensors) when it refreshes.
    The bar itself still advances every batch; validation and epoch ends refresh the metrics as before.

    Its description names the global step out of `trainer.max_steps` where that bounds the run (our experiments
    train for steps, with `max_epochs: -1`), refreshed with the metrics. Lightning 2.6 wrote "Epoch 5/-2" there
    (Lightning-AI/pytorch-lightning#21925); an unbounded epoch count is now left without a total.

    Where the output is no terminal (a SLURM job's log, `> train.log`), Rich draws the bar only when it stops,
    so a long run would log nothing for hours: there the bar prints a plain line at a metrics refresh, at most
    every `log_lines_every_s` seconds ("Epoch 3, step 500/10000 | 21.4 steps/s | train/loss: 0.071"), and one as
    training ends, instead of Rich's single frame (the bar folded to 80 columns, one metric word per line)."""

    def __init__(self, metrics_every_n_steps: int = 20, step_metrics=("train/loss", "train/acc"),
                 log_lines_every_s: float = 60.0, **kwargs):
        if isinstance(metrics_every_n_steps, bool) or not isinstance(metrics_every_n_steps, int) \
                or metrics_every_n_steps < 1:
            raise ValueError(f"metrics_every_n_steps must be an integer >= 1, got {metrics_every_n_steps!r}")
        if isinstance(step_metrics, str):
            raise ValueError(f"step_metrics must be a list of metric names, got the string {step_metrics!r}")
        if isinstance(log_lines_every_s, bool) or not isinstance(log_lines_every_s, (int, float)) \
                or not log_lines_every_s >= 0:
            raise ValueError(f"log_lines_every_s must be a number of seconds >= 0, got {log_lines_every_s!r}")
        super().__init__(**kwargs)
        self.metrics_every_n_steps = metrics_every_n_steps
        self.step_metrics = tuple(step_metrics)
        self.log_lines_every_s = float(log_lines_every_s)
        self._skip_metrics = False
        self._last_line: tuple[float, int] | None = None  # (time, global step) of the last plain line
        self._metrics_read: dict = {}  # what the latest refresh read from the device, reused by the plain line

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        for name in self.step_metrics:
            value = trainer.callback_metrics.get(name)
            if value is not None and name not in items:
                items[name] = float(value)  # the sync, once per refresh
        self._metrics_read = items
        return items

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # by the global step, as Lightning's log_every_n_steps: an epoch shorter than N batches still refreshes
        self._skip_metrics = trainer.global_step % self.metrics_every_n_steps != 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._skip_metrics = False

    def _update_metrics(self, trainer, pl_module) -> None:
        if not self._skip_metrics:
            super()._update_metrics(trainer, pl_module)
            if self.progress is not None and self.train_progress_bar_id is not None and trainer.training:
                description = self._get_train_description(trainer.current_epoch)
                self.progress.update(self.train_progress_bar_id, description=description)
                if not self._draws_live():  # where Rich draws the bar live, no lines
                    self._log_line(trainer, description.strip())

    def _draws_live(self) -> bool:
        return draws_live(self.progress.console)

    def _init_progress(self, trainer) -> None:
        super()._init_progress(trainer)
        if self.progress is not None and not self._draws_live():
            # a file gets the plain lines instead: Rich's one frame there, when the bar stops, is the bar at 80
            # columns with its metrics folded one word per line
            self.progress.live.transient = True

    def on_train_end(self, trainer, pl_module) -> None:
        if self.progress is not None and self.train_progress_bar_id is not None and not self._draws_live():
            self.get_metrics(trainer, pl_module)  # the metrics as training ends (one read of the device)
            description = self.progress.tasks[self.train_progress_bar_id].description  # the bar's last words
            self._log_line(trainer, description.strip(), final=True)
        super().on_train_end(trainer, pl_module)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_line = (time.monotonic(), trainer.global_step)

    def _log_line(self, trainer, description: str, final: bool = False) -> None:
        """The plain progress line for a log file (see the class docstring), throttled by wall time unless it is the
        `final` one; its metrics are those the refresh just read (no second read of the device)."""
        now, step = time.monotonic(), trainer.global_step
        since, from_step = self._last_line or (now, step)
        if step == from_step or (now - since < self.log_lines_every_s and not final):
            return
        self._last_line = (now, step)
        shown = {name: value for name, value in self._metrics_read.items() if name != "v_num"}
        parts = [description, f"{(step - from_step) / max(now - since, 1e-9):.3g} steps/s",
                 *(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}"
                   for name, value in shown.items())]
        self.progress.console.print(" | ".join(parts), markup=False, highlight=False, soft_wrap=True)

    def _get_train_description(self, current_epoch: int) -> str:
        """"Epoch 5/9", "Epoch 5, step 1500/2500" (max_steps bounds the run) or "Epoch 5"; host ints only."""
        trainer = self.trainer
        description = f"Epoch {current_epoch}"
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            description += f"/{trainer.max_epochs - 1}"
        if trainer.max_steps >= 0:  # -1: no step bound
            description += f", step {trainer.global_step}/{trainer.max_steps}"
        # as wide as the validation bar's description, so the two do not flicker (as Lightning pads it)
        return f"{description:{len(self.validation_description)}}"
