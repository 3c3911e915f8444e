"""A user's own configs beside guidelab's, without copying ours: Hydra's --config-dir (command line)
and hydra.searchpath (compose_config)."""

import sys

import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from user_configs import USER_BATCH_SIZE, USER_LR, USER_NET, write_user_configs


def test_compose_config_finds_user_options_through_searchpath(tmp_path):
    user = write_user_configs(tmp_path / "my_configs")
    cfg = compose_config("train", [f"hydra.searchpath=[file://{user}]", "experiment=mine"])
    assert {k: cfg.net[k] for k in USER_NET} == USER_NET
    assert cfg.data.batch_size == USER_BATCH_SIZE
    assert cfg.data._target_ == "guidelab.data.DigitsDataModule"  # from our digits.yaml, which theirs extends
    assert cfg.task.module.lr == USER_LR and cfg.task.module.weight_decay == 0.0  # ddpm's, but their lr
    assert cfg.diffusion.kind == "linear" and cfg.trainer.accelerator == "cpu"  # everything else is still ours


def test_without_the_user_dir_their_options_do_not_exist(tmp_path):
    write_user_configs(tmp_path / "my_configs")
    with pytest.raises(MissingConfigException, match="experiment/mine"):  # never silently the defaults
        compose_config("train", ["experiment=mine"])


def test_train_app_trains_with_a_user_config_dir(tmp_path, monkeypatch):
    """guidelab-train --config-dir my_configs experiment=mine, run in this process."""
    from guidelab.apps.train import main

    user = write_user_configs(tmp_path / "my_configs")
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_train_overrides(run_dir, "ddpm", steps=2)
                 if not o.startswith(("task=", "paths.output_dir=", "data.batch_size="))]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["guidelab-train", "--config-dir", "my_configs", "experiment=mine",
                                      f"hydra.run.dir={run_dir}", *overrides])
    try:
        main()
    finally:
        GlobalHydra.instance().clear()
    hp = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert {k: hp["net"][k] for k in USER_NET} == USER_NET and hp["lr"] == USER_LR
    saved = (run_dir / "config_resolved.yaml").read_text()
    assert f"batch_size: {USER_BATCH_SIZE}" in saved and str(user) not in saved
