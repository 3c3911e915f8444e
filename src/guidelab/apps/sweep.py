"""guidelab-sweep: train once, guide with any classifier. Samples a DDPM checkpoint with one or several
guidance methods (conf/method/) across guidance scales, all from the same x_T, and writes one table and
one plot (quality_diversity.json / .png, one curve per method) in its run dir."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from guidelab.apps.config import (CONFIG_PATH, ConfigError, check_cuda_visible, check_required, ensure_writable,
                                  instantiate, print_config_tree, read_data_shape)
from guidelab.apps.errors import app_failures, mark_work_started
from guidelab.apps.loggers import finish_wandb, make_loggers
from guidelab.apps.notices import quiet_library_notices
from guidelab.evaluation.guidance_methods import Nets, build_methods
from guidelab.evaluation.guided_sweep import metrics_with_real_set, run_guided_sweep
from guidelab.evaluation.report import log_to_loggers, print_table, write_report
from guidelab.evaluation.sweep_settings import SweepSettings, check_metric_settings
from guidelab.modules import CheckpointError, load_module

CHECKPOINT_KEYS = ("ddpm_checkpoint", "eval_classifier_checkpoint", "classifier_checkpoint",
                   "clean_classifier_checkpoint", "weak_ddpm_checkpoint", "cfg_ddpm_checkpoint")


def load_and_check(cfg: DictConfig, datamodule, device=None):
    """Load the DDPM, the evaluation classifier and every net the selected methods need, and refuse any
    that disagree, before any sampling. Returns (ddpm, eval_classifier, {name: SweepMethod})."""
    ddpm = load_module(cfg.ddpm_checkpoint, ("ddpm", "cfg_ddpm"))
    eval_classifier = load_module(cfg.eval_classifier_checkpoint, "eval_classifier")
    paths = {key: cfg.get(key) for key in CHECKPOINT_KEYS}
    nets = Nets(ddpm=ddpm, classifier=None, eval_classifier=eval_classifier, paths=paths)
    methods = build_methods(cfg.method, nets, device=device)
    data_shape, _ = read_data_shape(cfg, datamodule)
    if data_shape != ddpm.meta["image_shape"]:
        raise CheckpointError(f"image_shape: ddpm ({cfg.ddpm_checkpoint}) has {ddpm.meta['image_shape']}, "
                              f"data {cfg.data._target_} has {data_shape}")
    if datamodule.num_classes != eval_classifier.meta["num_classes"]:
        raise CheckpointError(f"num_classes: eval_classifier ({cfg.eval_classifier_checkpoint}) has "
                              f"{eval_classifier.meta['num_classes']}, data {cfg.data._target_} has {datamodule.num_classes}")
    return ddpm, eval_classifier, methods


def guidance_settings(cfg: DictConfig) -> SweepSettings:
    """SweepSettings from cfg.guidance; a bad value is a ConfigError naming its guidance.* key."""
    for index, value in enumerate(cfg.guidance.get("scales") or []):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"guidance.scales[{index}]={value!r} is not a number; pass numbers, e.g. "
                              "guidance.scales=[0,1,2,4]")
    try:
        return SweepSettings.from_config(cfg.guidance)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid guidance config (guidance.*): {err}") from err


def record_inputs(result, cfg: DictConfig, device: torch.device):
    """The checkpoints and device a (partial or whole) sweep result came from, in its settings."""
    result.settings.update({key: None if cfg.get(key) is None else str(cfg.get(key)) for key in CHECKPOINT_KEYS},
                           device=str(device))
    return result


def write_partial_report(partial, output_dir) -> None:
    """The report of the methods sampled so far, rewritten after each one (the last write is the whole sweep):
    a sweep that dies in a later method keeps the earlier ones' curves and samples."""
    paths = write_report(partial, output_dir)
    done, pending = ", ".join(partial.settings["methods"]), ", ".join(partial.settings["methods_pending"])
    print(f"methods sampled: {done}; to come: {pending}; results so far in {paths['quality_diversity.json']}",
          flush=True)


def sweep_device(value) -> torch.device:
    """The device `device=` names: auto (the GPU where there is one, else the CPU), cpu, cuda or cuda:N."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device={value!r} is not a torch device; use device=auto, cpu, cuda or cuda:N") from err


def run_sweep(cfg: DictConfig):
    """The whole sweep from a composed config; returns (SweepResult, {name: path})."""
    check_cuda_visible("device", cfg.device, "sample on the CPU with device=cpu, or leave device=auto (the GPU where "
                       "there is one)")
    device = sweep_device(cfg.device)
    datamodule = instantiate(cfg.data)
    settings = guidance_settings(cfg)
    ddpm, eval_classifier, methods = load_and_check(cfg, datamodule, device)
    try:
        settings.check_methods(ddpm.schedule, ddpm.meta["image_shape"], methods)
    except ValueError as err:
        raise ConfigError(f"invalid sampling settings (guidance.*, method.*): {err}") from err
    try:
        check_metric_settings(cfg.metrics, datamodule)
    except ValueError as err:
        raise ConfigError(f"invalid metric settings (metrics.*): {err}") from err
    pl.seed_everything(cfg.seed)
    output_dir = ensure_writable(cfg.paths.output_dir)
    loggers = make_loggers(cfg, output_dir)
    mark_work_started(output_dir)
    try:
        metrics = metrics_with_real_set(
            eval_classifier, datamodule, datamodule.num_classes, features=cfg.metrics.features,
            inception_weights=cfg.metrics.inception_weights, num_real=cfg.metrics.num_real,
            split=cfg.metrics.real_split, batch_size=settings.batch_size, device=device)
        ddpm.to(device)
        result = run_guided_sweep(methods, ddpm.schedule, ddpm.meta["image_shape"], datamodule.num_classes,
                                  metrics, settings, device=device,
                                  on_method_done=lambda partial: write_partial_report(
                                      record_inputs(partial, cfg, device), output_dir))
        paths = write_report(record_inputs(result, cfg, device), output_dir)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        log_to_loggers(result, loggers)
        for logger in loggers:
            logger.save()
    finally:
        finish_wandb()
    return result, paths


@hydra.main(config_path=CONFIG_PATH, config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    output_dir = Path(cfg.paths.output_dir)
    quiet_library_notices()
    with app_failures("guidelab-sweep", output_dir):
        check_required(cfg)
        print_config_tree(cfg, output_dir / "config_resolved.yaml")
        result, paths = run_sweep(cfg)
    print_table(result.rows)
    print(f"quality_diversity.json: {paths['quality_diversity.json']}")


if __name__ == "__main__":
    main()
