"""Where a resumed run continues from (its last checkpoint and its W&B id), and the checks that the
checkpoint is readable and was trained under the same recipe; `init_from` for fine-tuning under another."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from guidelab.apps.config import ConfigError
from guidelab.apps.loggers import WANDB_ID_FILE
from guidelab.modules import CheckpointError, read_checkpoint
from guidelab.modules.checkpoint import recipe_differences

LAST = Path("checkpoints") / "last.ckpt"
STEP = Path("checkpoints") / "step.ckpt"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newer of last.ckpt (epoch ends) and step.ckpt (every N steps) in a run dir."""
    found = [run_dir / name for name in (LAST, STEP) if (run_dir / name).is_file()]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def latest_run_with_checkpoint(runs_root: Path, exclude: Path) -> Path | None:
    """The most recently written run dir under runs_root holding a checkpoint to resume from."""
    runs = [d for d in runs_root.glob("*") if d.is_dir() and d.resolve() != exclude.resolve() and newest_checkpoint(d)]
    return max(runs, key=lambda d: newest_checkpoint(d).stat().st_mtime, default=None)


def resolve_resume(cfg: DictConfig, output_dir: Path) -> tuple[str | None, str | None]:
    """(ckpt_path for trainer.fit, W&B run id to resume).

    resume=true or ckpt_path=last: the newest run of this task under paths.log_dir that has a
    last.ckpt (this run dir first, if it has one); resume=<run dir> or ckpt_path=<file>: that one.
    The W&B id saved in that run dir is reused, so the dashboard shows one continuous run.
    """
    resume, ckpt = cfg.get("resume"), cfg.get("ckpt_path")
    if resume is True or ckpt == "last":
        ckpt = newest_checkpoint(output_dir)
        if ckpt is None:
            runs_root = Path(cfg.paths.log_dir) / cfg.task.name
            previous = latest_run_with_checkpoint(runs_root, output_dir)
            if previous is None:
                raise CheckpointError(
                    f"resume=true: no run under {runs_root} has a checkpoint; pass resume=<run dir> or "
                    "ckpt_path=/path/to/last.ckpt"
                )
            ckpt = newest_checkpoint(previous)
    elif resume not in (None, False):
        ckpt = newest_checkpoint(Path(str(resume))) if Path(str(resume)).is_dir() else Path(str(resume))
    if ckpt is None:
        return None, None
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise CheckpointError(f"checkpoint to resume from does not exist: {ckpt} (resume={resume}, ckpt_path="
                              f"{cfg.get('ckpt_path')}); pass a run dir holding checkpoints/last.ckpt or the .ckpt itself")
    id_file = ckpt.parent.parent / WANDB_ID_FILE
    return str(ckpt), (id_file.read_text().strip() if id_file.exists() else None)


def check_resume(ckpt_path: str | Path, module: pl.LightningModule, task_name: str) -> None:
    """Refuse, before any step, a checkpoint that cannot be read (see read_checkpoint), that holds another
    kind of model, or that was trained under another recipe (schedule, T, net, image shape, classes,
    optimizer settings), naming both sides. Fine-tuning under a new recipe is `init_from=<ckpt>`."""
    hp = read_checkpoint(ckpt_path)["hyper_parameters"]
    if hp["kind"] != module.kind:
        raise CheckpointError(f"cannot resume task={task_name} (a {module.kind!r} model) from {ckpt_path}, which holds a "
                              f"{hp['kind']!r} model; pass a checkpoint written by guidelab-train task={task_name}")
    problems = recipe_differences(hp, dict(module.hparams), f"checkpoint {ckpt_path}", "this run")
    if problems:
        raise CheckpointError(
            "resuming under a different recipe would continue training the saved model under the new settings:\n  "
            + "\n  ".join(problems)
            + "\nresume with the checkpoint's settings (its run dir holds config_resolved.yaml), or fine-tune from its "
            "weights under the new recipe with init_from=<ckpt> (a fresh run: step 0, new optimizer)"
        )


def init_weights_from(ckpt_path: str | Path, module: pl.LightningModule, task_name: str) -> None:
    """init_from=<ckpt>: load only the weights (EMA weights where the run kept an EMA) into a fresh run, which
    may use another recipe (schedule, lr, ...); the net must have the same architecture."""
    ckpt = read_checkpoint(ckpt_path)
    hp = ckpt["hyper_parameters"]
    if hp["kind"] != module.kind:
        raise CheckpointError(f"init_from={ckpt_path} holds a {hp['kind']!r} model, but task={task_name} trains a "
                              f"{module.kind!r} model; pass a checkpoint of the same task")
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        details = "; ".join(line.strip() for line in str(err).splitlines()[1:4] if line.strip())
        raise CheckpointError(f"init_from={ckpt_path}: its weights do not fit this run's net (net, image shape or "
                              f"classes differ: {details[:400]}); use the checkpoint's net and data settings") from err


def resume_or_init(cfg: DictConfig, output_dir: Path, module: pl.LightningModule) -> tuple[str | None, str | None]:
    """(ckpt_path for trainer.fit, W&B id to resume), after the checks above; init_from loads weights only."""
    init_from = cfg.get("init_from")
    ckpt_path, resume_id = resolve_resume(cfg, output_dir)
    if init_from is not None and ckpt_path is not None:
        raise ConfigError(f"init_from={init_from} starts a fresh run from weights, resume={cfg.get('resume')} / "
                          f"ckpt_path={cfg.get('ckpt_path')} continue one: pass only one of them")
    if init_from is not None:
        init_weights_from(init_from, module, cfg.task.name)
    elif ckpt_path is not None:
        check_resume(ckpt_path, module, cfg.task.name)
    return ckpt_path, resume_id
