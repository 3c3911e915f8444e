"""GuidedSamplingCallback: while a classifier trains, sweep guidance scales with a frozen DDPM and log
the quality-diversity curves (W&B tables, charts, image grids per scale) and a PNG of them."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from guidelab.evaluation.guided_sweep import SweepSettings, metrics_with_real_set, run_guided_sweep
from guidelab.evaluation.report import log_to_loggers, print_table, write_report
from guidelab.metrics import QualityDiversityMetrics
from guidelab.modules import check_compatible, load_module


class GuidedSamplingCallback(pl.Callback):
    """Every `every_n_epochs` epochs and at fit end, sample across `scales` and score each scale.

    ddpm_checkpoint: the frozen unconditional DDPM (its EMA weights) to guide.
    eval_classifier_checkpoint: the independent clean classifier for accuracy and FID features.
    classifier_checkpoint: guide with this classifier; None guides with the module being trained.
    Writes <run dir>/guided_sampling/epoch<N>/quality_diversity.{json,png} on rank zero, N = epochs completed.
    """

    def __init__(
        self,
        ddpm_checkpoint: str,
        eval_classifier_checkpoint: str,
        classifier_checkpoint: str | None = None,
        scales=(-1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
        samples_per_scale: int = 200,
        batch_size: int = 1024,
        sampler: str = "ddim",
        steps: int | None = 50,
        eta: float = 0.0,
        form: str = "eps",
        clip_denoised: bool = True,
        scale_schedule: str = "constant",
        interval=None,
        fast_path: str = "auto",
        every_n_epochs: int = 1,
        num_real: int = 1000,
        real_split: str = "train",
        features: str = "classifier",
        inception_weights: str | None = None,
        seed: int = 0,
        output_dir: str | None = None,
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.settings = SweepSettings(
            scales=list(scales), samples_per_scale=samples_per_scale, batch_size=batch_size, sampler=sampler,
            steps=steps, eta=eta, form=form, clip_denoised=clip_denoised, seed=seed, scale_schedule=scale_schedule,
            interval=None if interval is None else list(interval), fast_path=fast_path,
        )
        self.ddpm_checkpoint = ddpm_checkpoint
        self.eval_classifier_checkpoint = eval_classifier_checkpoint
        self.classifier_checkpoint = classifier_checkpoint
        self.every_n_epochs = every_n_epochs
        self.num_real = num_real
        self.real_split = real_split
        self.features = features
        self.inception_weights = inception_weights
        self.output_dir = output_dir
        self.results = []  # (epoch, SweepResult) of every sweep, for whoever wants them after fit
        self._last_epoch = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Load and check every model before training starts, so a mismatch fails at once."""
        self.ddpm = load_module(self.ddpm_checkpoint, "ddpm")
        self.eval_classifier = load_module(self.eval_classifier_checkpoint, "eval_classifier")
        self.classifier = load_module(self.classifier_checkpoint, "classifier") if self.classifier_checkpoint else None
        guide = self.classifier if self.classifier is not None else pl_module
        check_compatible(self.ddpm, guide, keys=("schedule", "image_shape"))
        check_compatible(guide, self.eval_classifier, keys=("image_shape", "num_classes"))
        self.settings.check_steps(self.ddpm.schedule.T)
        self.metrics = None

    def _prepare_metrics(self, trainer: pl.Trainer, device) -> QualityDiversityMetrics:
        if self.metrics is None:
            self.metrics = metrics_with_real_set(
                self.eval_classifier, trainer.datamodule, self.ddpm.hparams.num_classes, features=self.features,
                inception_weights=self.inception_weights, num_real=self.num_real, split=self.real_split,
                batch_size=self.settings.batch_size, device=device, rank=trainer.global_rank,
                world=trainer.world_size)
        return self.metrics

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._sweep(trainer, pl_module, trainer.current_epoch + 1)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_epoch != trainer.current_epoch:  # by now current_epoch counts the completed epochs
            self._sweep(trainer, pl_module, trainer.current_epoch)

    @torch.no_grad()
    def _sweep(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epochs_done: int) -> None:
        device = pl_module.device
        self._last_epoch = epochs_done
        guide = self.classifier if self.classifier is not None else pl_module
        was_training = pl_module.training
        guide.eval()
        self.ddpm.to(device)
        self.eval_classifier.to(device)
        if self.classifier is not None:
            self.classifier.to(device)
        try:
            result = run_guided_sweep(
                self.ddpm, guide, self.ddpm.schedule, self.ddpm.hparams.image_shape, self.ddpm.hparams.num_classes,
                self._prepare_metrics(trainer, device), self.settings, device=device,
                progress=trainer.progress_bar_callback is not None,
            )
        finally:
            pl_module.train(was_training)
        self.results.append((epochs_done, result))
        if trainer.is_global_zero:
            out = Path(self.output_dir or trainer.default_root_dir) / "guided_sampling" / f"epoch{epochs_done:03d}"
            paths = write_report(result, out)
            log_to_loggers(result, trainer.loggers, step=trainer.global_step)
            print_table(result.rows)
            rank_zero_info(f"guided sampling: {paths['quality_diversity.json']}")
