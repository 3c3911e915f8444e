"""The training stack end to end on the real configs: compose, train a few steps, checkpoint, reload."""

import csv
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny_train_overrides

from guidelab.apps.train import train
from guidelab.modules import DDPMModule, EvalClassifierModule, NoisyClassifierModule, load_module


@pytest.mark.parametrize("task", ["ddpm", "classifier", "eval_classifier"])
def test_each_task_trains_and_round_trips(task, tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tmp_path, task))
    result = train(cfg)
    ckpt = Path(result["last_checkpoint"])
    assert ckpt.is_file()
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = raw["hyper_parameters"]
    assert hp["schedule"]["kind"] == "linear" and hp["schedule"]["T"] == 1000
    assert list(hp["image_shape"]) == [1, 8, 8] and hp["num_classes"] == 10
    assert raw["global_step"] == 3

    module = load_module(ckpt)
    assert module.meta["kind"] == task
    assert type(module) is {"ddpm": DDPMModule, "classifier": NoisyClassifierModule,
                            "eval_classifier": EvalClassifierModule}[task]  # the class it was trained as
    for name, value in module.state_dict().items():
        assert torch.equal(value, raw["state_dict"][name]), name
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 900])
    out = module(x, t) if task != "eval_classifier" else module(x)
    assert out.shape == ((2, 1, 8, 8) if task == "ddpm" else (2, 10))
    assert (tmp_path / "config_resolved.yaml").exists() is False  # only the app prints/saves the tree
    assert (tmp_path / "csv" / "metrics.csv").exists()


def test_ddpm_checkpoint_holds_ema_weights(tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tmp_path, "ddpm", steps=4))
    raw = torch.load(train(cfg)["last_checkpoint"], weights_only=True)
    # FusedEMA (like Lightning's EMAWeightAveraging) puts the average in state_dict and the raw weights beside it
    assert "current_model_state" in raw
    differs = [not torch.equal(raw["state_dict"][k], raw["current_model_state"][k]) for k in raw["state_dict"]]
    assert any(differs)


@pytest.mark.parametrize("task, metrics", [("classifier", ["val/acc", "val/loss"]), ("ddpm", ["val/loss"])])
def test_logs_per_noise_quartile(task, metrics, tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tmp_path, task, steps=2))
    train(cfg)
    header = next(csv.reader(open(tmp_path / "csv" / "metrics.csv")))
    for q in range(4):
        for metric in metrics:
            assert f"{metric}_q{q}" in header


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=cifar10_ddpm"],
        ["experiment=cifar10_classifier"],
        ["experiment=cifar10_eval_classifier"],
        ["experiment=digits_ddpm"],
        ["experiment=digits_classifier"],
        ["experiment=digits_eval_classifier"],
        ["data=mnist", "task=classifier", "net=small_cnn"],
        ["data=image_folder", "data.root=/nowhere"],
        ["diffusion=cosine", "trainer=ddp_cpu"],
        ["trainer=gpu", "logger=wandb", "callbacks=none"],
    ],
)
def test_configs_compose(overrides, tmp_path):
    cfg = compose_config("train", [*overrides, f"paths.output_dir={tmp_path}"])
    assert cfg.task.module._target_.startswith("guidelab.modules.")
    assert cfg.net._target_.startswith("guidelab.nets.")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"


def test_cifar10_preset_size():
    from guidelab.modules.base import build_net

    cfg = compose_config("train", ["experiment=cifar10_ddpm", "paths.output_dir=."])
    net = build_net(dict(cfg.net), [3, 32, 32])
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 35.7e6) / 35.7e6 < 0.02


@pytest.mark.parametrize(
    "override,match",
    [
        ("data.batch_size=0", "batch_size"),
        ("task.module.lr=-1", "lr"),
        ("diffusion.T=0", "T must be"),
        ("diffusion.kind=quadratic", "unknown schedule"),
    ],
)
def test_bad_values_fail_before_training(override, match, tmp_path):
    cfg = compose_config("train", [*tiny_train_overrides(tmp_path, "ddpm"), override])
    with pytest.raises(ValueError, match=match):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_wandb_logger_goes_offline_without_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")  # no key and no mode: guidelab must choose offline by itself
    overrides = tiny_train_overrides(tmp_path, "eval_classifier", steps=2)
    overrides[overrides.index("logger=csv")] = "logger=wandb"
    train(compose_config("train", overrides))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert (tmp_path / "wandb_id.txt").read_text() in runs[0].name


def test_slurm_launcher_matches_tasks_to_devices():
    from omegaconf import OmegaConf

    cfg = compose_config("train", ["hydra/launcher=slurm", "experiment=cifar10_ddpm", "trainer.num_nodes=2",
                                   "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices == 8
    assert cfg.hydra.launcher.gpus_per_node == 8 and cfg.hydra.launcher.nodes == 2
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.signal_delay_s == 120


@pytest.mark.slow
def test_noisy_classifier_reads_noisy_digits(tmp_path):
    """The demo's guidance classifier: accurate at low noise, at chance at high noise, per-quartile figures logged."""
    cfg = compose_config("train", ["experiment=digits_classifier", f"paths.output_dir={tmp_path}", "logger=csv",
                                   "trainer.enable_model_summary=false"])
    train(cfg)
    rows = [r for r in csv.DictReader(open(tmp_path / "csv" / "metrics.csv")) if r.get("val/acc_q0")]
    final = rows[-1]
    assert float(final["val/acc_q0"]) >= 0.9
    assert float(final["val/acc_q3"]) <= 0.2
    assert float(final["val/acc_q0"]) > float(final["val/acc_q1"]) > float(final["val/acc_q3"])


def test_last_checkpoint_holds_every_trained_step(tmp_path):
    """A run stopped by max_steps between two validations still ends with last.ckpt at its final step,
    holding the EMA weights (state_dict) beside the raw ones."""
    # epochs of 4 steps, validation (and Lightning's last.ckpt) after each; the run stops 2 steps into epoch 2
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", "logger=csv", "trainer.max_steps=6",
                                   "trainer.max_epochs=-1", "+trainer.limit_train_batches=4",
                                   "+trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
                                   "trainer.enable_model_summary=false", "data.batch_size=32"])
    result = train(cfg)
    raw = torch.load(result["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == 6
    ema, live = raw["state_dict"], raw["current_model_state"]
    assert any(not torch.equal(ema[name], live[name]) for name in live)


@pytest.mark.parametrize("bound, warned", [(["trainer.max_epochs=-1", "trainer.max_steps=8"], False),
                                           (["trainer.max_epochs=2", "trainer.max_steps=-1"], True)],
                         ids=["step_bounded", "epoch_bounded"])
def test_logging_interval_warning_only_where_it_holds(bound, warned, tmp_path):
    """3 batches an epoch, a log line every 4 global steps: 8 steps across epochs are logged all the same, so the
    warning that no training step would be logged goes; 2 epochs of 3 steps keep it (logged at step 4 only)."""
    import warnings

    overrides = [*tiny_train_overrides(tmp_path, "ddpm", steps=3), "trainer.log_every_n_steps=4", *bound]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(compose_config("train", overrides))
    said = [w for w in caught if "is smaller than the logging interval" in str(w.message)]
    assert bool(said) == warned
    (path,) = tmp_path.rglob("metrics.csv")
    steps = [int(row["step"]) for row in csv.DictReader(path.open()) if row.get("train/loss")]
    assert steps == ([3, 7] if not warned else [3])  # every 4 global steps (0-based), across epochs
