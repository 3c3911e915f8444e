"""How the entry points end on failure: one clear line for a known user error, a traceback for a bug,
and a run dir that is removed only when the run failed before any work.

Known user errors are the ones the code raises on purpose with a message that names the key, file or
value and the fix: `ConfigError` (bad config values, unwritable dirs), `CheckpointError` (missing,
corrupt, foreign, unsafe or incompatible checkpoints), `DatasetNotFoundError` (data missing offline) and
`SweepSettingsError` (sampling or metric settings the training callback refuses at setup).
They print `<app>: error: <message>` on stderr and exit with status 2. Anything else keeps its full
traceback. `HYDRA_FULL_ERROR=1` shows the traceback for user errors too.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback as HydraCallback

from guidelab.apps.config import ConfigError, discard_failed_run_dir, missing_values_error
from guidelab.data import DatasetNotFoundError
from guidelab.evaluation.sweep_settings import SweepSettingsError
from guidelab.modules import CheckpointError

USER_ERRORS = (ConfigError, CheckpointError, DatasetNotFoundError, SweepSettingsError)
USER_ERROR_EXIT_CODE = 2

_started_run_dirs: set[Path] = set()


def mark_work_started(output_dir: str | Path) -> None:
    """From here on a failure keeps the run dir (logs, config, checkpoints): there is work to look at."""
    _started_run_dirs.add(Path(output_dir).resolve())


def work_started(output_dir: str | Path) -> bool:
    return Path(output_dir).resolve() in _started_run_dirs


class MarkWorkStarted(pl.Callback):
    """Marks the run dir as holding work once Lightning has set up the data and restored any checkpoint,
    i.e. right before the first sanity-check or training step."""

    def __init__(self, output_dir: str | Path):
        self.output_dir = output_dir

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mark_work_started(self.output_dir)


def one_line(message: str) -> str:
    """A multi-line message (e.g. a list of checkpoint mismatches) as one line."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    joined = ""
    for line in lines:
        joined += line if not joined else (" " if joined.endswith(":") else "; ") + line
    return joined


def full_errors_requested() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def in_multirun_job() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class MultirunJobFailed(CompactHydraException):
    """A known user error inside one job of a `-m` multirun. Hydra marks that job failed, runs the others,
    then re-raises the first failure after all of them; as a CompactHydraException it prints as this one
    line (exit status 1) instead of the job's traceback. The user error is its __cause__."""


def _as_user_error(err: BaseException) -> BaseException:
    """A config key left at `???` (a required value, e.g. the sweep's ddpm_checkpoint) is a user error: say which
    key and how to pass it, instead of omegaconf's traceback."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(err, MissingMandatoryValue):
        return missing_values_error([err.full_key or "a key"])
    return err


def exit_on_user_error(err: BaseException, app: str) -> None:
    """For a known user error: print one line and exit with USER_ERROR_EXIT_CODE. Otherwise return.
    Inside a multirun job the line is printed and a MultirunJobFailed goes back to Hydra, which marks that
    job failed, runs the next ones and ends with the line again."""
    err = _as_user_error(err)
    if isinstance(err, USER_ERRORS) and not full_errors_requested():
        line = f"{app}: error: {one_line(err)}"
        print(line, file=sys.stderr, flush=True)
        if in_multirun_job():
            raise MultirunJobFailed(f"{line} (in a job of this multirun; the other jobs ran)") from err
        raise SystemExit(USER_ERROR_EXIT_CODE) from None


@contextmanager
def app_failures(app: str, output_dir: str | Path | None = None):
    """Wrap an entry point's work: on failure remove the run dir only if no work had started (so bad input
    leaves nothing behind, while a run that died mid-way keeps train.log, its config and checkpoints),
    then end with one line for a user error or re-raise anything else with its traceback."""
    try:
        yield
    except Exception as err:
        if output_dir is not None and not work_started(output_dir):
            discard_failed_run_dir(output_dir)
        exit_on_user_error(err, app)
        raise


def first_existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_dir_can_be_made(path: str | Path, key: str) -> None:
    """Refuse, naming the key and the fix, a run dir that cannot be created: checked before Hydra makes it,
    without creating anything."""
    path = Path(path).absolute()
    existing = first_existing_parent(path)
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise ConfigError(f"output dir {path} cannot be created: {problem}; point {key} (or paths.log_dir) at a writable folder")


class CheckOutputDir(HydraCallback):
    """Hydra callback (conf/hydra/default.yaml): checks the run or sweep dir before Hydra's own mkdir,
    which would otherwise fail with a bare OSError and a traceback."""

    def _check(self, config, key: str) -> None:
        from omegaconf import OmegaConf

        try:
            check_dir_can_be_made(OmegaConf.select(config, key), key)
        except ConfigError as err:
            exit_on_user_error(err, f"guidelab-{OmegaConf.select(config, 'hydra.job.name')}")
            raise

    def on_run_start(self, config, **kwargs) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(config, "hydra.sweep.dir")
