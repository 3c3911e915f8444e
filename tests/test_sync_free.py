"""The sampling loop reads nothing back from the device after its first step.

On CUDA every read of a device value (`.item()`, `bool(t)`, `t.nonzero()`, `.any()` in an `if`) waits for the
GPU to finish all queued work, then the GPU idles while the host queues the next kernels. Those reads are the
same aten ops on CPU (`_local_scalar_dense`, `nonzero`, `is_nonzero`, `equal`), so a dispatch mode counts them
here. The first step may check inputs (targets against the class count); every later step must read nothing.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config
from torch.utils._python_dispatch import TorchDispatchMode

import guidelab.apps.train as train_app
from guidelab.apps.train import train
from guidelab.data import DigitsDataModule
from guidelab.modules import DDPMModule

from guidelab.diffusion import (
    Autoguidance,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    CleanClassifierGuidance,
    Composite,
    GuidanceInterval,
    ManifoldConstrained,
    NoiseSchedule,
    ProjectedGuidance,
    sample,
)
from guidelab.diffusion.scale_schedules import scheduled_scale
from guidelab.nets import EncoderClassifier, UNet

DEVICE_READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.is_nonzero.default",
                "aten.equal.default", "aten.item.default"}
NET = dict(image_size=8, in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
           attention_downsample=(2,), num_heads=4, dropout=0.0, groups=8)
BATCH = 8


class ReadsPerStep(TorchDispatchMode):
    """Counts device-reading ops, bucketed by sampling step (the sampler's callback advances the bucket)."""

    def __init__(self):
        super().__init__()
        self.per_step = [0]
        self.ops: list[list[str]] = [[]]

    def next_step(self, info: dict) -> None:
        self.per_step.append(0)
        self.ops.append([])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in DEVICE_READS:
            self.per_step[-1] += 1
            self.ops[-1].append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {
        "model": UNet(**NET).eval().requires_grad_(False),
        "weak": UNet(**NET).eval().requires_grad_(False),
        "conditional": UNet(**NET, num_classes=10).eval().requires_grad_(False),
        "classifier": EncoderClassifier(**NET, num_classes=10).eval().requires_grad_(False),
    }


def methods(nets):
    noisy = ClassifierGuidance(nets["classifier"])
    return {
        "classifier": (noisy, "model"),
        "classifier_mean": (ClassifierGuidance(nets["classifier"], form="mean"), "model"),
        "interval": (GuidanceInterval(ClassifierGuidance(nets["classifier"]), 300, 700), "model"),
        "cgpp": (ManifoldConstrained(ClassifierGuidance(nets["classifier"])), "model"),
        "projected": (ProjectedGuidance(ClassifierGuidance(nets["classifier"]), max_norm=1.0), "model"),
        "clean_x0": (CleanClassifierGuidance(nets["classifier"]), "model"),
        "autoguidance": (Autoguidance(nets["weak"]), "model"),
        "composite": (Composite([Autoguidance(nets["weak"]), ClassifierGuidance(nets["classifier"])], [0.5, 1.0]),
                      "model"),
        "cfg": (ClassifierFreeGuidance(null_class=10, num_classes=10), "conditional"),
    }


SAMPLER_OF = {"classifier_mean": "ddpm", "cgpp": "ddim"}


def reads_per_step(model, guidance, *, sampler="ddim", scale=None, steps=6):
    scales = torch.tensor([0.0, 1.0, 2.0, 4.0]).repeat_interleave(BATCH // 4)  # zero rows: skipped on the host
    mode = ReadsPerStep()
    with mode:
        sample(model, NoiseSchedule.linear(1000), (BATCH, 1, 8, 8), guidance=guidance, y=torch.arange(BATCH) % 10,
               scale=scales if scale is None else scale(scales), steps=steps, sampler=sampler, clip_denoised=True,
               generator=torch.Generator().manual_seed(0), callback=mode.next_step)
    return mode


@pytest.mark.parametrize("name", ["classifier", "classifier_mean", "interval", "cgpp", "projected", "clean_x0",
                                  "autoguidance", "composite", "cfg"])
def test_no_method_reads_the_device_after_the_first_step(nets, name):
    guidance, model = methods(nets)[name]
    mode = reads_per_step(nets[model], guidance, sampler=SAMPLER_OF.get(name, "ddim"))
    later = mode.per_step[1:-1]  # buckets of steps 2..n (the last bucket is after the last callback)
    assert later == [0] * len(later), f"{name}: device reads per step {mode.per_step}: {mode.ops[1:-1]}"


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++2m", "dpm++2m-t"])
@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_every_sampler_and_scale_schedule_is_read_free(nets, sampler, schedule):
    mode = reads_per_step(nets["model"], ClassifierGuidance(nets["classifier"]), sampler=sampler,
                          scale=lambda scales: scheduled_scale(scales, schedule, 1000))
    later = mode.per_step[1:-1]
    assert later == [0] * len(later), f"device reads per step {mode.per_step}: {mode.ops[1:-1]}"


def test_zero_scale_rows_skip_the_classifier_without_reading_the_device(nets):
    """The rows are picked on the host, yet the classifier still sees only the guided rows."""
    seen = []

    class Spy(torch.nn.Module):
        num_classes = 10

        def forward(self, x, t):
            seen.append(x.shape[0])
            return nets["classifier"](x, t)

    mode = reads_per_step(nets["model"], ClassifierGuidance(Spy()))
    assert seen and set(seen) == {BATCH - BATCH // 4}  # the w=0 quarter never reaches the classifier
    assert mode.per_step[1:-1] == [0] * (len(mode.per_step) - 2)


def test_targets_are_still_checked_once(nets):
    with pytest.raises(ValueError, match="y must lie in"):
        sample(nets["model"], NoiseSchedule.linear(1000), (2, 1, 8, 8), classifier=nets["classifier"],
               y=torch.tensor([3, 12]), scale=1.0, steps=2)


# ------------------------------------------------------------------------------------------- training
class ReadsPerBatch(pl.Callback):
    """ReadsPerStep over a training run: the bucket advances at every training batch."""

    def __init__(self):
        self.mode = ReadsPerStep()

    def on_train_start(self, trainer, pl_module):
        self.mode.__enter__()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.mode.next_step({})

    def on_train_end(self, trainer, pl_module):
        self.mode.__exit__(None, None, None)


@pytest.mark.parametrize("task", ["ddpm", "classifier"])
def test_training_steps_read_nothing_between_log_steps(task, tmp_path, monkeypatch):
    """guidelab-train's default callbacks and the modules: no read per step (Lightning would convert a
    `prog_bar=True` metric every batch). Reads happen only at logging, finite-check and epoch-end steps,
    which lie beyond these 10 steps of a 26-step epoch."""
    reads = ReadsPerBatch()
    cfg = compose_config("train", [f"task={task}", f"paths.output_dir={tmp_path}", "logger=csv", "data.batch_size=64",
                                   "trainer.max_steps=10", "trainer.log_every_n_steps=50",
                                   "trainer.enable_model_summary=false"])
    build = train_app.build_callbacks
    monkeypatch.setattr(train_app, "build_callbacks", lambda *args: [*build(*args), reads])
    train(cfg)
    # buckets: [0] before the first batch, [1] the first step (set-up reads allowed), [10] the last step and the end
    per_step = reads.mode.per_step[2:-1]
    assert len(per_step) == 8 and per_step == [0] * 8, f"device reads per training step {reads.mode.per_step}: " \
                                                       f"{reads.mode.ops}"


def test_progress_bar_still_shows_the_training_loss(tmp_path):
    from guidelab.callbacks import RichProgressBarEveryN

    bar = RichProgressBarEveryN(metrics_every_n_steps=2)
    pl.seed_everything(0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=4, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=[bar], default_root_dir=tmp_path)
    net = {k: v for k, v in NET.items() if k not in ("image_size", "in_channels")}
    module = DDPMModule(net={"_target_": "guidelab.nets.UNet", **net}, schedule={"kind": "linear", "T": 1000},
                        image_shape=[1, 8, 8])
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=16))
    shown = bar.get_metrics(trainer, module)
    assert isinstance(shown["train/loss"], float) and shown["train/loss"] > 0
