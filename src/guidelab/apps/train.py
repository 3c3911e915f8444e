"""guidelab-train: train the DDPM, the noisy classifier or the evaluation classifier.

    guidelab-train                                  # DDPM on the embedded digits, CPU
    guidelab-train task=classifier                  # noisy guidance classifier, same schedule
    guidelab-train experiment=cifar10_ddpm trainer=ddp trainer.devices=8
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from guidelab.apps.config import (CONFIG_PATH, ConfigError, check_cuda_visible, check_required, ensure_writable,
                                  instantiate, print_config_tree, read_data_shape)
from guidelab.apps.errors import MarkWorkStarted, app_failures
from guidelab.apps.loggers import finish_wandb, make_loggers
from guidelab.apps.notices import logging_interval_notice_for, quiet_library_notices
from guidelab.apps.resume import resume_or_init
from guidelab.callbacks.ema import FusedEMA


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[pl.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not has_logger:  # nothing to report learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    if cfg.task.get("ema"):
        # our fused, sync-free EMA with the semantics of Lightning's EMAWeightAveraging (see its docstring)
        try:
            callbacks.append(FusedEMA(decay=cfg.task.ema.decay))
        except ValueError as err:
            raise ConfigError(f"task.ema.decay: {err}; e.g. task.ema.decay=0.9999 (or task.ema=null for none)") from err
    return callbacks


def save_last_at_end(trainer: pl.Trainer, output_dir: Path) -> None:
    """Lightning writes last.ckpt after validation, so a run stopped by max_steps between two validations
    would leave last.ckpt behind the weights it trained (the demo lost its last 100 of 2,500 steps). Write it
    once more when fit ends (every rank calls this; Lightning writes on rank zero)."""
    checkpoint = trainer.checkpoint_callback
    if not (trainer.state.finished and checkpoint is not None and checkpoint.save_last):
        return
    # ModelCheckpoint's record of the step it last wrote (Lightning 2.x); unknown means write
    if getattr(checkpoint, "_last_global_step_saved", -1) != trainer.global_step:
        # a full checkpoint (optimizer, EMA, loops: what resume needs); said outright, else Lightning logs that
        # "weights_only was not set", which reads as if loading were unsafe (loading is weights_only=True)
        trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt", weights_only=False)


def train(cfg: DictConfig) -> dict:
    """Build everything from the config (failing before any training on bad values), then fit."""
    check_cuda_visible("trainer.accelerator", cfg.trainer.get("accelerator"), "train on the CPU with trainer=cpu "
                       "(trainer=ddp_cpu for several processes), or run where a GPU is visible")
    for key in ("max_steps", "max_epochs"):  # Lightning would "train" 0 steps and still write last.ckpt
        if cfg.trainer.get(key) == 0:
            raise ConfigError(f"trainer.{key}=0 trains nothing; give a positive count (or -1: no bound)")
    output_dir = ensure_writable(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    image_shape, num_classes = read_data_shape(cfg, datamodule)
    module = instantiate(
        cfg.task.module,
        net=OmegaConf.to_container(cfg.net, resolve=True),
        schedule=OmegaConf.to_container(cfg.diffusion, resolve=True),
        image_shape=image_shape,
        num_classes=num_classes,
        _recursive_=False,
    )
    ckpt_path, resume_id = resume_or_init(cfg, output_dir, module)
    loggers = make_loggers(cfg, output_dir, resume_id)
    callbacks = [*build_callbacks(cfg, bool(loggers)), MarkWorkStarted(output_dir)]
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(output_dir))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        with logging_interval_notice_for(trainer):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)  # read_checkpoint checked it
        save_last_at_end(trainer, output_dir)
    finally:
        finish_wandb()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    return {"metrics": metrics, "best_checkpoint": best, "last_checkpoint": str(output_dir / "checkpoints" / "last.ckpt")}


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    output_dir = Path(cfg.paths.output_dir)
    quiet_library_notices()
    with app_failures("guidelab-train", output_dir):
        check_required(cfg)
        print_config_tree(cfg, output_dir / "config_resolved.yaml")
        result = train(cfg)
    print(f"checkpoints: {result['last_checkpoint']}")
    return result["metrics"].get(cfg.task.monitor)


if __name__ == "__main__":
    main()
