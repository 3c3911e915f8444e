"""Experiment loggers from the `logger` group. W&B never blocks or loses training: it goes offline by itself
when no API key is configured or its server cannot be reached, its start-up is bounded (`init_timeout`),
and the offline fallback is a real offline run that does not touch the network."""

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
DEFAULT_WANDB_URL = "https://api.wandb.ai"
REACHABILITY_TIMEOUT_S = 5.0
AGGREGATE_INIT_TIMEOUT_S = 30.0  # guidelab-aggregate has no Hydra config; the apps' is logger.wandb.init_timeout
AGGREGATE_FINISH_TIMEOUT_S = 300.0  # ... and logger.wandb.finish_timeout


def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_server_reachable(timeout: float = REACHABILITY_TIMEOUT_S) -> bool:
    """Whether the W&B server (WANDB_BASE_URL) answers an HTTP request within `timeout` seconds; any HTTP status
    counts as an answer. Goes through HTTP(S)_PROXY like wandb does."""
    import urllib.error
    import urllib.request

    url = os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_URL
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # refused, no route, DNS, timeout, TLS; a malformed URL
        return False


def wandb_online_possible() -> bool:
    """False, with a warning, when the W&B server cannot be reached: the run then logs offline at once."""
    if wandb_server_reachable():
        return True
    warnings.warn(f"W&B server {os.environ.get('WANDB_BASE_URL') or DEFAULT_WANDB_URL} cannot be reached; "
                  "logging offline instead (sync later with `wandb sync`)", RuntimeWarning, stacklevel=3)
    return False


def wandb_settings(init_timeout: float, finish_timeout: float | None):
    """wandb.Settings bounding a run's start-up and its final upload. `finish_timeout` is left out where it is None
    or this wandb does not know it: the end of a run then waits as long as the uploads take."""
    import wandb

    bounds = {"init_timeout": init_timeout}
    if finish_timeout is not None and "finish_timeout" in getattr(wandb.Settings, "model_fields", {}):
        bounds["finish_timeout"] = finish_timeout
    return wandb.Settings(**bounds)


def make_wandb_logger(conf: dict, init_timeout: float, finish_timeout: float | None) -> WandbLogger:
    """The configured WandbLogger, with a bounded start-up and end; mode="offline" is passed to wandb.init itself,
    since wandb keeps the mode it read when it first set up in this process."""
    conf = dict(conf)
    target = hydra.utils.get_class(conf.pop("_target_"))
    if conf.get("offline"):
        conf["mode"] = "offline"
    return target(**conf, settings=wandb_settings(init_timeout, finish_timeout))


def stop_wandb_service() -> None:
    """End wandb's background service (a fresh one starts with the next run), dropping what it still retries."""
    import wandb

    try:
        from wandb.analytics.opentelemetry import opentelemetry_proxy

        opentelemetry_proxy.disable()  # wandb's own usage telemetry would go on posting to the silent server
        wandb.teardown(exit_code=1)
    except Exception as err:  # never let the dashboard's cleanup end training
        warnings.warn(f"W&B service did not stop cleanly: {err!r}", RuntimeWarning, stacklevel=2)


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
            # WANDB_INIT_TIMEOUT, wandb's own variable, overrides the config's init_timeout
            init_timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or conf.pop("init_timeout"))
            conf.pop("init_timeout", None)
            finish_timeout = conf.pop("finish_timeout", None)  # None (a config without it): wandb's own, no bound
            if conf.get("offline") == "auto":
                conf["offline"] = not wandb_has_key() or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
            if not conf["offline"] and rank_zero_only.rank == 0:
                conf["offline"] = not wandb_online_possible()
            context = multirun_context()
            conf["group"] = conf.get("group") or context.get("group")
            if context.get("name"):
                conf["name"] = f"{conf.get('name')}[{context['name']}]"
            id_file = Path(output_dir) / WANDB_ID_FILE
            run_id = resume_id or (id_file.read_text().strip() if id_file.exists() else None)
            if run_id:
                conf.update(id=run_id, resume="allow")
            os.environ.setdefault("WANDB_SILENT", "true")
            logger = make_wandb_logger(conf, init_timeout, finish_timeout)
            if rank_zero_only.rank == 0:
                try:
                    run_id_now = logger.experiment.id
                except Exception as err:  # e.g. a key, a route, but no answer within init_timeout: log offline
                    warnings.warn(f"W&B could not start online within {init_timeout:.0f} s ({err}); logging offline "
                                  "instead (sync later with `wandb sync`)", RuntimeWarning, stacklevel=2)
                    stop_wandb_service()  # else it keeps retrying the failed online run until the process exits
                    logger = make_wandb_logger({**conf, "offline": True}, init_timeout, finish_timeout)
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Lightning 2.6 hands wandb.init anonymous=None whatever was asked, and wandb (0.31 here) prints
        # "The anonymous setting has no effect" for any value it is given: leave the key out unless a user set it
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    log_metrics = _warn_instead_of_raising(WandbLogger.log_metrics)
    log_hyperparams = _warn_instead_of_raising(WandbLogger.log_hyperparams)
    log_table = _warn_instead_of_raising(WandbLogger.log_table)
    log_image = _warn_instead_of_raising(WandbLogger.log_image)
    after_save_checkpoint = _warn_instead_of_raising(WandbLogger.after_save_checkpoint)
    finalize = _warn_instead_of_raising(WandbLogger.finalize)
