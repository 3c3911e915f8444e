import os

import pytest
# Imported before any test captures output: Lightning's loggers bind their stream handlers to sys.stderr at
# import time, and an import inside a capsys test would leave them writing to a closed capture stream.
import pytorch_lightning  # noqa: F401
from guidelab.apps.config import compose_config  # noqa: F401  (the tests' way to compose real configs)

os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _no_wandb_network(monkeypatch, tmp_path):
    """No test may reach W&B's servers or a user's W&B settings."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def tiny_train_overrides(out, task: str, steps: int = 3) -> list[str]:
    """A few steps of a real task config on digits, with small nets."""
    return [
        f"task={task}",
        f"paths.output_dir={out}",
        "logger=csv",
        f"+trainer.limit_train_batches={steps}",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "+trainer.limit_val_batches=1",
        "trainer.enable_model_summary=false",
        "data.batch_size=32",
    ]
