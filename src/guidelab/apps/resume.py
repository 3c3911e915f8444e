"""Where a resumed run continues from: its last checkpoint and its W&B id."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from guidelab.apps.loggers import WANDB_ID_FILE

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
                raise FileNotFoundError(
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
        raise FileNotFoundError(f"checkpoint to resume from does not exist: {ckpt}")
    id_file = ckpt.parent.parent / WANDB_ID_FILE
    return str(ckpt), (id_file.read_text().strip() if id_file.exists() else None)
