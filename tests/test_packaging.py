"""guidelab as users install it: a wheel that carries its configs, installed outside the repository and
run from another working directory, finding its configs through pkg://guidelab.conf."""

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_overrides
from user_configs import USER_NET, write_user_configs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "guidelab" / "conf"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel .` of a copy of the sources (the checkout stays untouched), offline: no build isolation,
    with the setuptools already installed."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(dist)], check=True, timeout=300)
    (built,) = dist.glob("guidelab-*.whl")
    return built


def test_wheel_holds_every_config(wheel):
    ours = {f"guidelab/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    inside = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("guidelab/conf/")}
    assert len(ours) > 30
    assert ours <= inside, sorted(ours - inside)
    assert "guidelab/conf/__init__.py" in inside  # pkg://guidelab.conf imports it


def install_outside_repo(wheel: Path, root: Path) -> Path:
    """A fresh virtual environment with only guidelab from the wheel; torch & co. come from the running
    environment's site-packages (listed in a .pth file after the install, so pip installs guidelab
    instead of finding the checkout's editable one; the listed dirs' own .pth files are not read, so
    the editable guidelab stays invisible)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, timeout=300)
    (own_site,) = (venv / "lib").glob("python3*/site-packages")
    (own_site / "reuse_installed_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def run(venv: Path, cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GUIDELAB_ROOT")}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.mark.slow
def test_installed_wheel_runs_from_another_directory(wheel, tmp_path):
    venv = install_outside_repo(wheel, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = run(venv, elsewhere, str(venv / "bin" / "python"), "-c", "import guidelab; print(guidelab.__file__)")
    assert Path(found.strip()).is_relative_to(venv), found  # the installed copy, not the checkout

    train = str(venv / "bin" / "guidelab-train")
    assert "guidelab-train: train one model" in run(venv, elsewhere, train, "--help")
    job = run(venv, elsewhere, train, "--cfg", "job", "task=classifier")
    assert "guidelab.modules.NoisyClassifierModule" in job and "guidelab.nets.EncoderClassifier" in job

    # a user's config dir beside the installed configs
    write_user_configs(elsewhere / "my_configs")
    mine = run(venv, elsewhere, train, "--config-dir", "my_configs", "experiment=mine", "--cfg", "job")
    assert f"base_channels: {USER_NET['base_channels']}" in mine

    # a few digits training steps, into ./outputs of this directory
    overrides = [o for o in tiny_train_overrides(None, "ddpm") if not o.startswith("paths.output_dir=")]
    run(venv, elsewhere, train, *overrides)
    (checkpoint,) = (elsewhere / "outputs" / "ddpm").glob("*/checkpoints/last.ckpt")
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3
