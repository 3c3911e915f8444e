"""Experiment loggers from the `logger` group; W&B goes offline by itself when no API key is configured."""

from __future__ import annotations

import functools
import netrc
import os
import warnings
from pathlib import Path

import hydra.utils
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

WANDB_ID_FILE = "wandb_id.txt"


def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def multirun_context() -> dict:
    """group (the sweep dir), name (from the overrides) and job number when running under hydra -m."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return {}
    return {"group": Path(hc.sweep.dir).name, "name": hc.job.override_dirname or f"job{hc.job.num}"}


def make_loggers(cfg: DictConfig, output_dir: str | Path, resume_id: str | None = None) -> list:
    """Instantiate every logger in cfg.logger. W&B: offline without a key, grouped under multirun,
    and resumed under the id saved in the run dir, so a resumed run continues the same W&B run."""
    loggers = []
    for name, conf in (cfg.get("logger") or {}).items():
        conf = OmegaConf.to_container(conf, resolve=True)
        if conf["_target_"].endswith("WandbLogger"):
            if conf.get("offline") == "auto":
                conf["offline"] = not wandb_has_key()
            context = multirun_context()
            conf["group"] = conf.get("group") or context.get("group")
            if context.get("name"):
                conf["name"] = f"{conf.get('name')}[{context['name']}]"
            id_file = Path(output_dir) / WANDB_ID_FILE
            run_id = resume_id or (id_file.read_text().strip() if id_file.exists() else None)
            if run_id:
                conf.update(id=run_id, resume="allow")
            os.environ.setdefault("WANDB_SILENT", "true")
            logger = hydra.utils.instantiate(conf)
            if rank_zero_only.rank == 0:
                try:
                    run_id_now = logger.experiment.id
                except Exception as err:  # e.g. a key but no network: keep training, log offline
                    warnings.warn(f"W&B could not start online ({err}); logging offline instead", stacklevel=2)
                    logger = hydra.utils.instantiate({**conf, "offline": True})
                    run_id_now = logger.experiment.id
                id_file.parent.mkdir(parents=True, exist_ok=True)
                id_file.write_text(run_id_now)
        else:
            logger = hydra.utils.instantiate(conf)
        loggers.append(logger)
    return loggers


def finish_wandb() -> None:
    """Close the W&B run so the next multirun job starts a fresh one."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def _warn_instead_of_raising(method):
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as err:
            warnings.warn(f"W&B {method.__name__} failed, training goes on: {err!r}", RuntimeWarning, stacklevel=2)
            return None

    return guarded


class ResilientWandbLogger(WandbLogger):
    """Lightning's WandbLogger, except that a W&B failure mid-run (network, service, disk) is a warning:
    a dashboard problem never kills training. Checkpoints and CSV logs are unaffected."""

    log_metrics = _warn_instead_of_raising(WandbLogger.log_metrics)
    log_hyperparams = _warn_instead_of_raising(WandbLogger.log_hyperparams)
    log_table = _warn_instead_of_raising(WandbLogger.log_table)
    log_image = _warn_instead_of_raising(WandbLogger.log_image)
    after_save_checkpoint = _warn_instead_of_raising(WandbLogger.after_save_checkpoint)
    finalize = _warn_instead_of_raising(WandbLogger.finalize)
