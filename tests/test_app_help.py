"""`guidelab-train --help` and `guidelab-sweep --help`: what the app does and every config group it composes."""

import importlib
import re
import sys

import pytest
from conftest import compose_config
from hydra.core.global_hydra import GlobalHydra

APPS = {"train": "train one model", "sweep": "train once, guide with any classifier"}


def app_help(app: str, monkeypatch, capsys, *args: str) -> str:
    main = importlib.import_module(f"guidelab.apps.{app}").main
    monkeypatch.setattr(sys, "argv", [f"guidelab-{app}", "--help", *args])
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        GlobalHydra.instance().clear()
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("app", APPS)
def test_help_says_what_the_app_does_and_lists_its_groups(app, monkeypatch, capsys):
    text = app_help(app, monkeypatch, capsys)
    header, _, rest = text.partition("== Config groups")
    assert header.startswith(f"guidelab-{app}: {APPS[app]}")
    # every group the app's config composes is named in the header and its options listed below
    choices = compose_config(app, [], return_hydra_config=True).hydra.runtime.choices
    # a group placed under another package is listed by its group name ("sweep_settings@guidance" -> "sweep_settings")
    groups = [group.split("@")[0] for group in choices if not group.startswith("hydra")]
    assert "data" in groups and "logger" in groups
    composes = rest[rest.index("The groups this app composes:"):].split("\n\n")[0]
    for group in groups:
        assert re.search(rf"\b{group}\b", composes), group
        assert f"\n{group}: " in rest, group
    assert "digits, " in rest and "== Config (override any key" in rest  # options and the composed config


def test_help_lists_a_user_config_dir_options(tmp_path, monkeypatch, capsys):
    from user_configs import write_user_configs

    write_user_configs(tmp_path / "my_configs")
    text = app_help("train", monkeypatch, capsys, "--config-dir", str(tmp_path / "my_configs"))
    net_line = next(line for line in text.splitlines() if line.startswith("net: "))
    assert "my_unet" in net_line and "unet_digits" in net_line


def test_config_tree_keeps_long_values_whole(capsys, tmp_path):
    """The config tree printed at start holds every value whole, however narrow the console (80 columns in a
    log file or a SLURM job's output); a long checkpoint path wraps instead of being cut."""
    from guidelab.apps.config import print_config_tree

    long_path = "/" + "/".join(f"directory_{i:02d}" for i in range(25)) + "/checkpoints/last.ckpt"  # 347 chars
    cfg = compose_config("sweep", [f"ddpm_checkpoint={long_path}", "eval_classifier_checkpoint=e.ckpt",
                                    "classifier_checkpoint=c.ckpt", f"paths.output_dir={tmp_path}", "logger=none"])
    print_config_tree(cfg, save_to=tmp_path / "config_resolved.yaml")
    lines = capsys.readouterr().out.splitlines()
    assert long_path in "".join(line.strip(" │├└─") for line in lines)
    assert long_path in (tmp_path / "config_resolved.yaml").read_text()
