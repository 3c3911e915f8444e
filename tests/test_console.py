"""What a guidelab-train run prints: the run's own lines, without library notices a user cannot act on."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import tiny_train_overrides

NOTICES = {
    "Lightning's LitLogger advertisement": "💡 Tip:",
    "torch's deprecation of the LeafSpec Lightning builds": "LeafSpec",
    "wandb's note on the anonymous setting Lightning always passes": "anonymous setting",
}


def test_train_output_has_no_library_notices(tmp_path):
    overrides = [o for o in tiny_train_overrides(tmp_path / "run", "ddpm", steps=2) if o != "logger=csv"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "guidelab-train"), *overrides, "logger=wandb"],
                          capture_output=True, text=True, timeout=300, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "checkpoints:" in output  # the run's own closing line is still printed
    assert (tmp_path / "run" / "wandb").is_dir()  # and W&B ran, so its notice had its chance
    printed = [name for name, text in NOTICES.items() if text in output]
    assert printed == [], output[-3000:]
