"""The bad-input catalog: each fails before any work, names the problem and the fix, and leaves no output."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from hydra.errors import ConfigCompositionException, MissingConfigException

from guidelab.apps import aggregate, demo
from guidelab.apps.config import ConfigError
from guidelab.apps.errors import USER_ERROR_EXIT_CODE
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


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/guidelab_pwned",))


def bad_file(kind: str, folder: Path, good: str) -> Path:
    """A checkpoint file that is broken in one way."""
    path = folder / f"{kind}.ckpt"
    if kind == "random_bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(Path(good).read_bytes()[:2000])
    elif kind == "text":
        path.write_text("these are not weights")
    elif kind == "unsafe":
        torch.save({"state_dict": {}, "hyper_parameters": {"kind": "ddpm"}, "payload": RunsCode()}, path)
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "unknown_kind":
        torch.save({"state_dict": {}, "hyper_parameters": {"kind": "vae"}}, path)
    return path


BAD_FILES = [
    ("random_bytes", "is not a checkpoint file"),
    ("text", "is not a checkpoint file"),
    ("empty", "is empty"),
    ("truncated", "is truncated or corrupted"),
    ("unsafe", r"is unsafe: .*posix.system"),
    ("foreign", "is not a guidelab checkpoint"),
    ("unknown_kind", "unknown kind 'vae'"),
]


@pytest.mark.parametrize("kind,match", BAD_FILES, ids=[k for k, _ in BAD_FILES])
def test_broken_checkpoint_files_are_told_apart(ckpts, tmp_path, kind, match):
    path = bad_file(kind, tmp_path, ckpts["ddpm"])
    with pytest.raises(CheckpointError, match=match) as err:
        load_module(path)
    assert str(path) in str(err.value)
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


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_without_a_gpu_is_refused_before_work(tmp_path, monkeypatch, trainer):
    """trainer=gpu where torch sees no GPU: one message naming the key and the fix, before any data or dir."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_config("train", [*tiny_train_overrides(tmp_path / "run", "ddpm"), f"trainer={trainer}"])
    with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu asks for a CUDA GPU, .* trainer=cpu"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_sweep_on_cuda_without_a_gpu_is_refused_before_work(ckpts, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device=cuda:0 asks for a CUDA GPU, .* device=cpu"):
        run_sweep(sweep_cfg(tmp_path, ckpts, extra=["device=cuda:0"]))
    assert_no_output(tmp_path)


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
    log = tmp_path / "logs"
    proc = subprocess.run([str(Path(sys.executable).parent / "guidelab-train"), "data.batch_size=0",
                           f"paths.log_dir={log}", "logger=csv"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == USER_ERROR_EXIT_CODE
    assert "batch_size must be an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("guidelab-train: error: invalid config for")
    assert not (log / "ddpm").exists() or not any((log / "ddpm").iterdir())


# --- resume, ckpt_path and init_from in guidelab-train ---------------------------------------------------

def tiny_train_cfg(out, task="ddpm", extra=()):
    return compose_config("train", [*tiny_train_overrides(out, task), *extra])


def save_like_train(cfg, path: Path) -> str:
    """The checkpoint train() would write for cfg, without training (hyperparameters and weights)."""
    from guidelab.apps.config import instantiate
    from guidelab.apps.config import read_data_shape
    from omegaconf import OmegaConf

    datamodule = instantiate(cfg.data)
    shape, classes = read_data_shape(cfg, datamodule)
    module = instantiate(cfg.task.module, net=OmegaConf.to_container(cfg.net, resolve=True),
                         schedule=OmegaConf.to_container(cfg.diffusion, resolve=True), image_shape=shape,
                         num_classes=classes, _recursive_=False)
    return save(module, path)


@pytest.fixture(scope="module")
def run_ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return {task: save_like_train(tiny_train_cfg(d / task, task), d / f"{task}.ckpt") for task in ("ddpm", "classifier")}


def assert_nothing_written_or_lost(out: Path, source: str | None = None, before: bytes | None = None):
    assert not (out / "checkpoints").exists() and not (out / "wandb").exists() and not (out / "csv").exists()
    if source is not None:
        assert Path(source).read_bytes() == before  # the checkpoint given is untouched


RESUME_REFUSALS = [
    ("ddpm", ["diffusion=cosine"], r"schedule.kind: checkpoint .*ddpm.ckpt has 'linear', this run has 'cosine'"),
    ("ddpm", ["diffusion.T=500"], r"schedule.T: checkpoint .* has 1000, this run has 500"),
    ("ddpm", ["task.module.lr=0.001"], r"lr: checkpoint .* has 0.0002, this run has 0.001"),
    ("ddpm", ["net.base_channels=32"], r"net.base_channels: checkpoint .* has 16, this run has 32"),
    ("ddpm", ["data.image_size=16"], r"image_shape: checkpoint .* has \[1, 8, 8\], this run has \[1, 16, 16\]"),
    ("classifier", [], r"cannot resume task=ddpm .* holds a 'classifier' model"),
]


@pytest.mark.parametrize("ckpt,extra,match", RESUME_REFUSALS, ids=["schedule", "T", "lr", "net", "image_size", "kind"])
def test_resume_under_another_recipe_is_refused(run_ckpts, tmp_path, ckpt, extra, match):
    before = Path(run_ckpts[ckpt]).read_bytes()
    cfg = tiny_train_cfg(tmp_path, "ddpm", [f"ckpt_path={run_ckpts[ckpt]}", *extra])
    with pytest.raises(CheckpointError, match=match) as err:
        train(cfg)
    assert "init_from=" in str(err.value) or "task=ddpm" in str(err.value)  # names the way out
    assert_nothing_written_or_lost(tmp_path, run_ckpts[ckpt], before)


@pytest.mark.parametrize("kind,match", BAD_FILES[:5], ids=[k for k, _ in BAD_FILES[:5]])
def test_resume_from_a_broken_file_names_it(ckpts, tmp_path, kind, match):
    path = bad_file(kind, tmp_path, ckpts["ddpm"])
    with pytest.raises(CheckpointError, match=match) as err:
        train(tiny_train_cfg(tmp_path / "run", "ddpm", [f"ckpt_path={path}"]))
    assert str(path) in str(err.value)
    assert_nothing_written_or_lost(tmp_path / "run")


@pytest.mark.parametrize(
    "extra,match",
    [(["resume=true", "paths.log_dir={tmp}/empty_logs"], "resume=true: no run under"),
     (["resume={tmp}/no_such_run"], "checkpoint to resume from does not exist"),
     (["init_from={ddpm}", "ckpt_path={ddpm}"], "pass only one of them"),
     (["init_from={classifier}"], "init_from=.* holds a 'classifier' model, but task=ddpm"),
     (["init_from={ddpm}", "net.base_channels=32"], "init_from=.* weights do not fit this run's net")],
    ids=["resume_nothing", "resume_missing_dir", "init_and_resume", "init_kind", "init_net"],
)
def test_resume_and_init_from_refusals(run_ckpts, tmp_path, extra, match):
    extra = [e.format(tmp=tmp_path, **run_ckpts) for e in extra]
    with pytest.raises((CheckpointError, ConfigError), match=match):
        train(tiny_train_cfg(tmp_path / "run", "ddpm", extra))
    assert_nothing_written_or_lost(tmp_path / "run")


# --- nets and data values -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "extra,match",
    [(["+net.attention_resolutions=[16]", "net.attention_downsample=null"],
      r"net.attention_resolutions=\[16\]: .* never occur for 8x8 images .* override net.attention_resolutions=\[4\]"),
     (["+net.attention_resolutions=[4]"], "give net.attention_resolutions .* or net.attention_downsample .* not both"),
     (["net.attention_downsample=[3]"], r"net.attention_downsample=\[3\]: factors \[3\] give no feature map"),
     (["data.val_fraction=1.5"], "val_fraction must be a number strictly between 0 and 1"),
     (["task.ema.decay=1.5"], r"task.ema.decay: EMA decay must be in \[0, 1\), got 1.5; e.g. task.ema.decay=0.9999"),
     (["trainer.max_steps=0"], r"trainer.max_steps=0 trains nothing")],
    ids=["attention_size", "attention_both", "attention_factor", "val_fraction", "ema_decay", "max_steps_0"],
)
def test_invalid_net_and_data_values(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        train(tiny_train_cfg(tmp_path, "ddpm", extra))
    assert_nothing_written_or_lost(tmp_path)


# --- more sweep inputs ------------------------------------------------------------------------------

SWEEP_REFUSALS = [
    ({"extra": ["guidance.scales=[0,abc]"]}, ConfigError, r"guidance.scales\[1\]='abc' is not a number"),
    ({"ddpm": "classifier"}, CheckpointError, r"holds a 'classifier' model, but a ddpm or cfg_ddpm checkpoint is needed"),
    ({"classifier": "null"}, CheckpointError, "method .auto. needs classifier_checkpoint: set classifier_checkpoint="),
    ({"extra": ["data.image_size=16"]}, CheckpointError, r"image_shape: ddpm .* has \[1, 8, 8\], data .* has \[1, 16, 16\]"),
    ({"extra": ["guidance.batch_size=0"]}, ConfigError, r"guidance.\*.*batch_size must be >= 1"),
    ({"extra": ["metrics.features=inception", "metrics.inception_weights=/nonexistent/inception.pth"]}, ConfigError,
     r"metrics\.\*\): features=inception: Inception weights .* not found at /nonexistent/inception.pth"),
    ({"extra": ["metrics.num_real=5000"]}, ConfigError,
     r"metrics\.\*\): num_real=5000 must be an integer in \[1, \d+\], the size of the train split; lower "
     "num_real"),
    ({"extra": ["metrics.features=clip"]}, ConfigError,
     r"metrics\.\*\): features must be one of \['classifier', 'inception'\], got 'clip'"),
    ({"extra": ["metrics.real_split=test"]}, ConfigError, r"metrics\.\*\): real_split must be 'train' or 'val'"),
    ({"extra": ["device=tpu"]}, ConfigError, r"device='tpu' is not a torch device; use device=auto, cpu, cuda"),
    ({"extra": ["guidance.grid_size=-3"]}, ConfigError, r"guidance.\*.*grid_size .* must be >= 0, got -3"),
    ({"extra": ["guidance.sampler=euler"]}, ConfigError,
     r"guidance.\*.*unknown sampler 'euler'; choose one of \['ddim', 'ddpm'"),
    ({"extra": ["guidance.eta=-0.5"]}, ConfigError, r"guidance.\*.*eta must be >= 0, got -0.5"),
    # a method that cannot take the sampler is refused before the methods ahead of it sample
    ({"extra": ["method=[classifier,classifier_mean]", "method.classifier_mean.sampler=ddim"]}, ConfigError,
     r"method classifier_mean with sampler=ddim.*\(set in method.classifier_mean: sampler\): form='mean' is defined "
     "for the ancestral sampler only"),
    ({"extra": ["method=[classifier,cgpp]", "guidance.sampler=ddpm"]}, ConfigError,
     r"method cgpp with sampler=ddpm, .*: classifier\+\+ re-noises x0_hat in a DDIM step; use sampler=ddim"),
    ({"extra": ["guidance.sampler=dpm++2m", "guidance.eta=0.5"]}, ConfigError,
     r"sampler='dpm\+\+2m' solves the deterministic ODE; eta must be 0, got 0.5"),
]


@pytest.mark.parametrize("which,error,match", SWEEP_REFUSALS, ids=[
    "scale_abc", "ddpm_kind", "no_classifier", "data_shape", "batch_size", "inception_weights", "num_real",
    "features_kind", "real_split", "device", "grid_size", "sampler_name",
    "eta_negative", "mean_form_ddim", "cgpp_ddpm", "ode_eta"])
def test_more_sweep_refusals(ckpts, tmp_path, which, error, match):
    with pytest.raises(error, match=match):
        run_sweep(sweep_cfg(tmp_path, ckpts, **which))
    assert_no_output(tmp_path)


def test_sweep_on_an_image_folder_without_images_is_refused_before_sampling(ckpts, tmp_path):
    """Class folders but no image in them: the real set cannot be counted, and the line says why, naming the data."""
    for digit in range(10):
        (tmp_path / "images" / str(digit)).mkdir(parents=True)
    extra = ["data=image_folder", f"data.root={tmp_path / 'images'}", "data.image_size=8", "data.channels=1",
             "data.num_workers=0"]
    with pytest.raises(ConfigError, match=r"metrics\.\*\): the data \(ImageFolderDataModule\) could not be set up to "
                                          "count its train split: no readable image files in"):
        run_sweep(sweep_cfg(tmp_path / "out", ckpts, extra=extra))
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("role", ["ddpm", "classifier", "eval_classifier"])
def test_sweep_names_the_broken_file_of_each_role(ckpts, tmp_path, role):
    path = bad_file("random_bytes", tmp_path, ckpts["ddpm"])
    with pytest.raises(CheckpointError, match="is not a checkpoint file") as err:
        run_sweep(sweep_cfg(tmp_path / "out", ckpts, **{role: str(path)}))
    assert str(path) in str(err.value)
    assert_no_output(tmp_path / "out")


# --- guidelab-demo and guidelab-aggregate, through their main() --------------------------------------

def run_main(main, argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code, capsys.readouterr().err


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.mark.parametrize(
    "argv,match",
    [(["sampler.steps=3"], "override 'sampler.steps=3' must start with one of"),
     (["eval_classifier.data.batch_size=0"], "guidelab-demo: error: invalid config for .*batch_size must be an integer >= 1"),
     (["eval_classifier.task.module.lr=-1"], "guidelab-demo: error: .*lr must be a positive number")],
    ids=["stage_prefix", "batch_size", "lr"],
)
def test_demo_bad_input(tmp_path, capsys, argv, match):
    import re

    code, err = run_main(demo.main, [*argv, "--out", str(tmp_path / "demo"), "--logger", "none"], capsys)
    assert code != 0
    assert re.search(match, err + str(code)), err
    assert "Traceback" not in err
    assert files_under(tmp_path / "demo") == []


def test_demo_output_dir_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    code, err = run_main(demo.main, ["--out", str(blocker / "demo"), "--logger", "none"], capsys)
    assert code == USER_ERROR_EXIT_CODE and "not writable" in err and str(blocker) in err
    assert blocker.read_text() == "keep me"


def write_report_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD_REPORT = json.dumps({"rows": [{"scale": 0.0, "fid": 1.0}]})
AGGREGATE_REFUSALS = [
    ({"0/quality_diversity.json": GOOD_REPORT, "1/quality_diversity.json": '{"rows": [{"scale": 0.0,'},
     r"1/quality_diversity.json is not valid JSON"),
    ({"0/quality_diversity.json": "[1, 2, 3]"}, r"0/quality_diversity.json is not a guidelab-sweep report"),
    ({"0/notes.txt": "nothing here"}, "no quality_diversity.json under"),
]


@pytest.mark.parametrize("files,match", AGGREGATE_REFUSALS, ids=["corrupt_json", "not_a_report", "empty_dir"])
def test_aggregate_bad_input(tmp_path, capsys, files, match):
    import re

    for name, text in files.items():
        write_report_file(tmp_path / "multirun" / name, text)
    before = {p: p.read_bytes() for p in files_under(tmp_path / "multirun")}
    code, err = run_main(aggregate.main, [str(tmp_path / "multirun"), "--no-wandb"], capsys)
    assert code == USER_ERROR_EXIT_CODE and re.search(match, err), err
    assert err.startswith("guidelab-aggregate: error:") and "Traceback" not in err
    assert {p: p.read_bytes() for p in files_under(tmp_path / "multirun")} == before  # nothing added or changed


def test_aggregate_root_that_is_not_a_folder(tmp_path, capsys):
    code, err = run_main(aggregate.main, [str(tmp_path / "nowhere"), "--no-wandb"], capsys)
    assert code == USER_ERROR_EXIT_CODE and "nowhere is not a folder" in err
    assert not (tmp_path / "nowhere").exists()


# --- the real command lines: one line for user errors, a traceback on request ----------------------------

def cli(app, *args, env_extra=None):
    env = {**os.environ, "WANDB_MODE": "offline", **(env_extra or {})}
    return subprocess.run([str(Path(sys.executable).parent / app), *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_cli_output_dir_under_a_file_fails_before_hydra_mkdir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = cli("guidelab-train", f"hydra.run.dir={blocker}/run", "logger=none")
    assert proc.returncode == USER_ERROR_EXIT_CODE
    assert proc.stderr.strip() == (f"guidelab-train: error: output dir {blocker}/run cannot be created: {blocker} is a "
                                   "file, not a folder; point hydra.run.dir (or paths.log_dir) at a writable folder")


@pytest.mark.slow
def test_cli_sweep_bad_scale_is_one_line(ckpts, tmp_path):
    proc = cli("guidelab-sweep", f"ddpm_checkpoint={ckpts['ddpm']}", f"classifier_checkpoint={ckpts['classifier']}",
               f"eval_classifier_checkpoint={ckpts['eval_classifier']}", "guidance.scales=[0,abc]", "logger=none",
               f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == USER_ERROR_EXIT_CODE and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("guidelab-sweep: error: guidance.scales[1]='abc' is not a number; "
                                                    "pass numbers, e.g. guidance.scales=[0,1,2,4]")
    assert not (tmp_path / "run").exists()


def test_full_error_shows_the_traceback_and_bugs_keep_theirs(ckpts, tmp_path, monkeypatch, capsys):
    from guidelab.apps.errors import app_failures

    for out, full in ((tmp_path / "a", False), (tmp_path / "b", True)):
        out.mkdir()
        if full:
            monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
        with pytest.raises(SystemExit if not full else ConfigError):
            with app_failures("guidelab-sweep", out):
                run_sweep(sweep_cfg(out, ckpts, extra=["guidance.scales=[0,abc]"]))
        assert not out.exists()  # failed before work: removed
    assert capsys.readouterr().err.count("guidelab-sweep: error:") == 1
    with pytest.raises(ZeroDivisionError):  # not a user error: re-raised for its traceback
        with app_failures("guidelab-train"):
            1 / 0


def test_user_error_in_a_multirun_job_fails_only_that_job(tmp_path, monkeypatch, capsys):
    """Under hydra -m the line is printed and the error goes back to Hydra (job FAILED, the next jobs run),
    instead of SystemExit ending the whole multirun."""
    from guidelab.apps import errors

    monkeypatch.setattr(errors, "in_multirun_job", lambda: True)
    (tmp_path / "job0").mkdir()
    with pytest.raises(errors.MultirunJobFailed, match="batch_size") as failure:
        with errors.app_failures("guidelab-train", tmp_path / "job0"):
            train(tiny_train_cfg(tmp_path / "job0", "ddpm", ["data.batch_size=0"]))
    assert isinstance(failure.value.__cause__, ConfigError)
    assert capsys.readouterr().err.startswith("guidelab-train: error: invalid config for")
    assert not (tmp_path / "job0").exists()


def test_multirun_with_a_bad_job_ends_in_one_line_not_a_traceback(tmp_path, monkeypatch, capfd):
    """guidelab-train -m with one bad and one good job: the good job trains, and the run ends with the
    bad job's line, not Hydra's re-raised traceback."""
    from guidelab.apps import train as train_app

    argv = ["guidelab-train", "-m", *tiny_train_overrides(tmp_path / "unused", "ddpm")[:1], "logger=csv",
            "+trainer.limit_train_batches=2", "trainer.max_epochs=1", "+trainer.limit_val_batches=1",
            "trainer.enable_model_summary=false", "callbacks.progress=null", "data.batch_size=0,32",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as ended:
        train_app.main()
    err = capfd.readouterr().err
    assert ended.value.code == 1
    assert "Traceback" not in err
    assert err.count("guidelab-train: error: invalid config for") == 2  # the job's line, then Hydra's last word
    assert "(in a job of this multirun; the other jobs ran)" in err
    assert list((tmp_path / "multirun").glob("*/checkpoints/last.ckpt")), "the good job did not train"


def run_hydra_app_expecting_user_error(app: str, argv: list[str], tmp_path, monkeypatch, capsys) -> str:
    """guidelab-<app> run in this process as from the command line; it must end on a one-line user error (exit
    status 2, no traceback) and leave no run dir. Returns what it wrote to stderr."""
    import importlib

    from hydra.core.global_hydra import GlobalHydra

    main = importlib.import_module(f"guidelab.apps.{app}").main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"guidelab-{app}", *argv, f"hydra.run.dir={tmp_path / 'run'}"])
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        GlobalHydra.instance().clear()
    err = capsys.readouterr().err
    assert exited.value.code == USER_ERROR_EXIT_CODE, err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
    return err


@pytest.mark.parametrize("app,argv,message", [
    ("sweep", ["logger=none"], "ddpm_checkpoint, eval_classifier_checkpoint have no value and are required; pass "
                               "ddpm_checkpoint=<path to a .ckpt written by guidelab-train> eval_classifier_checkpoint=<"),
    ("train", ["task=classifier", "callbacks=guided_sampling", "logger=none",
               "callbacks.guided_sampling.eval_classifier_checkpoint=x.ckpt"],
     "callbacks.guided_sampling.ddpm_checkpoint has no value and is required; pass "
     "callbacks.guided_sampling.ddpm_checkpoint=<path to a .ckpt"),
], ids=["sweep", "train_callback"])
def test_a_required_key_left_unset_is_one_line(app, argv, message, tmp_path, monkeypatch, capsys):
    """The first thing a new user meets (guidelab-sweep without its checkpoints) reads as a line naming every key
    left to set."""
    err = run_hydra_app_expecting_user_error(app, argv, tmp_path, monkeypatch, capsys)
    assert f"guidelab-{app}: error: {message}" in err


def test_the_callbacks_refusal_is_one_line_from_the_cli(ckpts, tmp_path, monkeypatch, capsys):
    """The training callback checks its settings at setup, inside fit, where the app cannot wrap them: its error
    is still a one-line user error, and the run dir goes."""
    argv = ["task=classifier", "callbacks=guided_sampling", "logger=none", "trainer.max_steps=2",
            f"callbacks.guided_sampling.ddpm_checkpoint={ckpts['ddpm']}",
            f"callbacks.guided_sampling.eval_classifier_checkpoint={ckpts['eval_classifier']}",
            "callbacks.guided_sampling.metrics.num_real=100000"]
    err = run_hydra_app_expecting_user_error("train", argv, tmp_path, monkeypatch, capsys)
    assert "guidelab-train: error: invalid metric settings (callbacks.guided_sampling.metrics.*): num_real=100000" in err
