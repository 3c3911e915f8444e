"""The bad-input catalog: each fails before any work, names the problem and the fix, and leaves no output."""

import os
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from hydra.errors import ConfigCompositionException, MissingConfigException

from guidelab.apps.config import ConfigError
from guidelab.apps.sweep import run_sweep
from guidelab.apps.train import train
from guidelab.data import DatasetNotFoundError
from guidelab.diffusion import sample
from guidelab.modules import CheckpointError, DDPMModule, EvalClassifierModule, NoisyClassifierModule, load_module

UNET = {"_target_": "guidelab.nets.UNet", "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [], "groups": 4}
CNN = {"_target_": "guidelab.nets.SmallCNNClassifier", "width": 8}
LINEAR = {"kind": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}


def save(module, path: Path) -> str:
    """A checkpoint in Lightning's layout, without training."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    shape = [1, 8, 8]
    made = {
        "ddpm": DDPMModule(UNET, LINEAR, shape),
        "classifier": NoisyClassifierModule(CNN, LINEAR, shape, 10),
        "eval_classifier": EvalClassifierModule({**CNN, "time_conditioned": False}, LINEAR, shape, 10),
        "classifier_T500": NoisyClassifierModule(CNN, {**LINEAR, "T": 500}, shape, 10),
        "classifier_cosine": NoisyClassifierModule(CNN, {"kind": "cosine", "T": 1000}, shape, 10),
        "classifier_16px": NoisyClassifierModule(CNN, LINEAR, [1, 16, 16], 10),
        "eval_classifier_5cls": EvalClassifierModule({**CNN, "time_conditioned": False}, LINEAR, shape, 5),
    }
    return {name: save(m, d / f"{name}.ckpt") for name, m in made.items()}


def sweep_cfg(out, ckpts, ddpm="ddpm", classifier="classifier", eval_classifier="eval_classifier", extra=()):
    return compose_config("sweep", [
        f"ddpm_checkpoint={ckpts.get(ddpm, ddpm)}", f"classifier_checkpoint={ckpts.get(classifier, classifier)}",
        f"eval_classifier_checkpoint={ckpts.get(eval_classifier, eval_classifier)}", f"paths.output_dir={out}",
        "logger=wandb", "guidance.samples_per_scale=4", "guidance.steps=2", "metrics.num_real=16", *extra,
    ])


def assert_no_output(out: Path):
    assert not (out / "quality_diversity.json").exists()
    assert not (out / "wandb").exists()
    assert not (out / "checkpoints").exists()


MISMATCHES = [
    ({"classifier": "classifier_T500"}, r"schedule.T: ddpm \(.*ddpm.ckpt\) has 1000, classifier \(.*classifier_T500.ckpt\) has 500"),
    ({"classifier": "classifier_cosine"}, r"schedule.kind: ddpm .* has 'linear', classifier .* has 'cosine'"),
    ({"classifier": "classifier_16px"}, r"image_shape: ddpm .* has \[1, 8, 8\], classifier .* has \[1, 16, 16\]"),
    ({"eval_classifier": "eval_classifier_5cls"}, r"num_classes: classifier .* has 10, eval_classifier .* has 5"),
]


@pytest.mark.parametrize("which,match", MISMATCHES, ids=["T", "schedule", "image_shape", "classes"])
def test_mismatched_checkpoints(ckpts, tmp_path, which, match):
    with pytest.raises(CheckpointError, match=match):
        run_sweep(sweep_cfg(tmp_path, ckpts, **which))
    assert_no_output(tmp_path)


def test_truncated_checkpoint(ckpts, tmp_path):
    broken = tmp_path / "truncated.ckpt"
    broken.write_bytes(Path(ckpts["ddpm"]).read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_module(broken)


def test_file_that_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="corrupted or truncated|not a guidelab checkpoint"):
        load_module(text)
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="not a guidelab checkpoint"):
        load_module(plain)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/guidelab_pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"kind": "ddpm"}, "payload": RunsCode()}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_module(evil)
    assert not Path("/tmp/guidelab_pwned").exists()


def test_missing_checkpoint_file(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        run_sweep(sweep_cfg(tmp_path, ckpts, ddpm=str(tmp_path / "nope.ckpt")))
    assert_no_output(tmp_path)


def test_dataset_missing_offline(tmp_path):
    cfg = compose_config("train", [*tiny_train_overrides(tmp_path / "run", "classifier"), "data=mnist", "net=small_cnn",
                                   f"paths.data_dir={tmp_path / 'data'}", "+data.download=false", "data.num_workers=0"])
    with pytest.raises(DatasetNotFoundError, match="MNIST") as err:
        train(cfg)
    assert str(tmp_path / "data") in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    cfg = compose_config("train", [*tiny_train_overrides(tmp_path / "run", "eval_classifier"), "data=image_folder",
                                   f"data.root={tmp_path / 'images'}", "data.num_workers=0"])
    with pytest.raises(ValueError, match="<class_name>"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_image_folder_root_missing(tmp_path):
    cfg = compose_config("train", [*tiny_train_overrides(tmp_path / "run", "eval_classifier"), "data=image_folder",
                                   f"data.root={tmp_path / 'nowhere'}", "data.num_workers=0"])
    with pytest.raises((DatasetNotFoundError, ConfigError), match="nowhere"):
        train(cfg)


@pytest.mark.parametrize(
    "override,match",
    [("data.batch_size=0", "batch_size"), ("task.module.lr=-0.1", "lr must be a positive number"),
     ("diffusion.T=0", "T must be")],
)
def test_invalid_training_values(tmp_path, override, match):
    cfg = compose_config("train", [*tiny_train_overrides(tmp_path, "ddpm"), override])
    with pytest.raises(ValueError, match=match):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_group_option():
    with pytest.raises((MissingConfigException, ConfigCompositionException), match="imagenet21k"):
        compose_config("train", ["data=imagenet21k"])


@pytest.mark.parametrize(
    "extra,match",
    [(["guidance.scales=[0.0,nan]"], "finite"), (["guidance.steps=2000"], "steps must be in"),
     (["guidance.samples_per_scale=1"], "samples_per_scale")],
)
def test_invalid_sweep_values(ckpts, tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        run_sweep(sweep_cfg(tmp_path, ckpts, extra=extra))
    assert_no_output(tmp_path)


def test_class_index_out_of_range(ckpts):
    ddpm, clf = load_module(ckpts["ddpm"]), load_module(ckpts["classifier"])
    with pytest.raises(ValueError, match=r"num_classes=10"):
        sample(ddpm, ddpm.schedule, (2, 1, 8, 8), classifier=clf, y=torch.tensor([3, 10]), scale=1.0, steps=2)


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = compose_config("train", tiny_train_overrides(blocker / "run", "ddpm"))
    with pytest.raises(ConfigError, match="not writable"):
        train(cfg)


def test_cli_failure_leaves_no_run_dir(tmp_path):
    import subprocess
    import sys

    log = tmp_path / "logs"
    proc = subprocess.run([str(Path(sys.executable).parent / "guidelab-train"), "data.batch_size=0",
                           f"paths.log_dir={log}", "logger=csv"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "batch_size must be an integer >= 1" in proc.stdout + proc.stderr
    assert not (log / "ddpm").exists() or not any((log / "ddpm").iterdir())
