"""GuidedSamplingCallback: while a classifier trains, sweep guidance methods and scales with a frozen DDPM
and log the quality-diversity curves (W&B tables, charts, image grids per method and scale) and a PNG of them."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from guidelab.evaluation.guidance_methods import Nets, build_methods
from guidelab.evaluation.guided_sweep import metrics_with_real_set, run_guided_sweep
from guidelab.evaluation.report import log_to_loggers, print_table, write_report
from guidelab.evaluation.sweep_settings import SweepSettings, SweepSettingsError, check_metric_settings
from guidelab.metrics import QualityDiversityMetrics
from guidelab.modules import check_compatible, load_module


class GuidedSamplingCallback(pl.Callback):
    """Every `every_n_epochs` epochs and at fit end, sample with every method across the scales and score them.

    ddpm_checkpoint: the frozen unconditional DDPM (its EMA weights) to guide.
    eval_classifier_checkpoint: the independent clean classifier for accuracy and FID features.
    settings / metrics: the sweep_settings and sweep_metrics config nodes (the ones guidelab-sweep reads).
    method: name -> method node (conf/method/); classifier guidance methods use classifier_checkpoint, or
    the module being trained when it is None; other nets come from the other *_checkpoint arguments.
    Writes <run dir>/guided_sampling/epoch<N>/quality_diversity.{json,png} on rank zero, N = epochs completed.
    """

    def __init__(self, ddpm_checkpoint: str, eval_classifier_checkpoint: str, settings, metrics, method,
                 every_n_epochs: int, classifier_checkpoint: str | None = None,
                 clean_classifier_checkpoint: str | None = None, weak_ddpm_checkpoint: str | None = None,
                 cfg_ddpm_checkpoint: str | None = None, output_dir: str | None = None):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.settings = SweepSettings.from_config(settings)
        self.metric_settings = dict(metrics)
        self.method_nodes = method
        self.paths = {"ddpm_checkpoint": ddpm_checkpoint, "eval_classifier_checkpoint": eval_classifier_checkpoint,
                      "classifier_checkpoint": classifier_checkpoint,
                      "clean_classifier_checkpoint": clean_classifier_checkpoint,
                      "weak_ddpm_checkpoint": weak_ddpm_checkpoint, "cfg_ddpm_checkpoint": cfg_ddpm_checkpoint}
        self.every_n_epochs = every_n_epochs
        self.output_dir = output_dir
        self.results = []  # (epoch, SweepResult) of every sweep, for whoever wants them after fit
        self._last_epoch = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Load and check every model and method before training starts, so a mismatch fails at once."""
        self.ddpm = load_module(self.paths["ddpm_checkpoint"], "ddpm")
        self.eval_classifier = load_module(self.paths["eval_classifier_checkpoint"], "eval_classifier")
        classifier = load_module(self.paths["classifier_checkpoint"], "classifier") \
            if self.paths["classifier_checkpoint"] else None
        self.guide = classifier if classifier is not None else pl_module
        check_compatible(self.ddpm, self.guide, keys=("schedule", "image_shape"))
        check_compatible(self.guide, self.eval_classifier, keys=("image_shape", "num_classes"))
        self.nets = Nets(ddpm=self.ddpm, classifier=self.guide, eval_classifier=self.eval_classifier, paths=self.paths)
        self.methods = build_methods(self.method_nodes, self.nets)
        try:
            self.settings.check_methods(self.ddpm.schedule, self.ddpm.meta["image_shape"], self.methods)
        except ValueError as err:
            raise SweepSettingsError(f"invalid sampling settings (callbacks.guided_sampling.settings.*, method.*): "
                                     f"{err}") from err
        try:  # the first sweep's real set and feature space, checked now rather than an epoch in
            check_metric_settings(self.metric_settings, trainer.datamodule)
        except ValueError as err:
            raise SweepSettingsError(f"invalid metric settings (callbacks.guided_sampling.metrics.*): {err}") from err
        self.metrics = None

    def _prepare_metrics(self, trainer: pl.Trainer, device) -> QualityDiversityMetrics:
        if self.metrics is None:
            m = self.metric_settings
            self.metrics = metrics_with_real_set(
                self.eval_classifier, trainer.datamodule, self.ddpm.hparams.num_classes, features=m["features"],
                inception_weights=m["inception_weights"], num_real=m["num_real"], split=m["real_split"],
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
        was_training = pl_module.training
        self.guide.eval()
        for module in (self.ddpm, self.eval_classifier, self.guide, *self.nets.loaded.values()):
            module.to(device)
        try:
            result = run_guided_sweep(
                self.methods, self.ddpm.schedule, self.ddpm.hparams.image_shape, self.ddpm.hparams.num_classes,
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
