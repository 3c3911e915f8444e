"""Where a resumed run continues from: its last checkpoint and its W&B id."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from guidelab.apps.loggers import WANDB_ID_FILE


def resolve_resume(cfg: DictConfig, output_dir: Path) -> tuple[str | None, str | None]:
    """(ckpt_path for trainer.fit, W&B run id to resume) from `resume` / `ckpt_path`.

    resume=true or ckpt_path=last: <output_dir>/checkpoints/last.ckpt of this run dir (point
    hydra.run.dir at the interrupted run). ckpt_path=<file>: that checkpoint; its run dir's W&B id.
    """
    ckpt = cfg.get("ckpt_path")
    if cfg.get("resume") or ckpt == "last":
        ckpt = output_dir / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            raise FileNotFoundError(
                f"resume=true but {ckpt} does not exist: set hydra.run.dir to the run dir of the interrupted run "
                "(the folder holding checkpoints/last.ckpt), or pass ckpt_path=/path/to/last.ckpt"
            )
    if ckpt is None:
        return None, None
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt} does not exist")
    id_file = ckpt.parent.parent / WANDB_ID_FILE
    return str(ckpt), (id_file.read_text().strip() if id_file.exists() else None)
