"""On a CUDA GPU for real (pytest -m gpu; never collected by default): trainer=gpu with the fast path."""

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config

from guidelab.apps.train import train
from guidelab.modules import load_module

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA device (run them with -m gpu on a GPU machine only)")


def tiny_cuda_nets():
    """A tiny UNet and EncoderClassifier (8x8, one channel, 10 classes) on CUDA, seeded, eval mode, frozen."""
    from guidelab.nets import EncoderClassifier, UNet

    net = dict(image_size=8, in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
               attention_downsample=(2,), num_heads=4, dropout=0.0, groups=8)
    torch.manual_seed(0)
    return (UNet(**net).cuda().eval().requires_grad_(False),
            EncoderClassifier(**net, num_classes=10).cuda().eval().requires_grad_(False))


def gpu_overrides(out, steps: int) -> list[str]:
    return ["trainer=gpu", "trainer.devices=1", "logger=csv", f"paths.output_dir={out}", f"trainer.max_steps={steps}",
            "trainer.max_epochs=-1",
            "+trainer.limit_val_batches=2", "trainer.check_val_every_n_epoch=1", "trainer.enable_model_summary=false"]


def test_trainer_gpu_ddpm_digits_fast_path(tmp_path):
    """bf16-mixed, fused AdamW, clipping, FusedEMA, channels_last (auto -> on) and torch.compile's "default" mode
    (compile=true; what `auto` picks under DDP) on CUDA."""
    cfg = compose_config("train", [*gpu_overrides(tmp_path, 30), "experiment=digits_ddpm", "task.module.compile=true"])
    result = train(cfg)
    raw = torch.load(result["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == 30
    assert raw["optimizer_states"][0]["param_groups"][0]["fused"] is True
    assert "current_model_state" in raw
    module = load_module(result["last_checkpoint"])
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert torch.isfinite(torch.tensor(result["metrics"]["val/loss"]))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_trainer_gpu_with_cuda_graphs(tmp_path, accumulate, monkeypatch):
    """The default on one GPU (compile: auto -> "reduce-overhead", CUDA graphs; the benchmark's ours_train_fast):
    training, the EMA swapped in for validation and the checkpoint all work with the net's forward and backward
    replayed. With gradient accumulation, the second batch's gradient is added to the first's, which a replay
    would have overwritten in the graphs' memory without the module's own .grad buffers
    (GuidelabModule.optimizer_zero_grad)."""
    modes, compile_net = [], torch.nn.Module.compile

    def recording_compile(self, *args, mode=None, **kwargs):
        modes.append(mode)
        return compile_net(self, *args, mode=mode, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", recording_compile)
    cfg = compose_config("train", [*gpu_overrides(tmp_path, 30), "experiment=digits_ddpm",
                                   f"+trainer.accumulate_grad_batches={accumulate}"])
    result = train(cfg)
    assert modes == ["reduce-overhead"]
    raw = torch.load(result["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == 30 and "current_model_state" in raw
    module = load_module(result["last_checkpoint"])
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert torch.isfinite(torch.tensor(result["metrics"]["val/loss"]))
    assert result["metrics"]["train/loss"] < 1.0  # eps-prediction MSE starts near 1 and falls when steps apply


def test_cifar10_preset_on_synthetic_data(tmp_path):
    """The cifar10_ddpm recipe (35.5M UNet) on one GPU with random data: a few compiled bf16 steps."""
    cfg = compose_config("train", [*gpu_overrides(tmp_path, 8), "experiment=cifar10_ddpm", "trainer=gpu",
                                   "data=synthetic", "data.batch_size=64", "data.num_samples=1024"])
    result = train(cfg)
    raw = torch.load(result["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == 8 and "current_model_state" in raw
    assert torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))


class SyncsAreErrors(pl.Callback):
    """torch.cuda.set_sync_debug_mode("error") for training batches first..last: any host-device sync raises."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.armed_steps = first, last, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first <= trainer.global_step <= self.last:
            torch.cuda.set_sync_debug_mode("error")
            self.armed_steps += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("default")


def test_training_steps_do_not_sync(tmp_path, monkeypatch):
    """The CUDA twin of tests/test_sync_free.py: steps between logging, finite checks and epoch ends make no
    host-device sync (the GPU queue runs ahead of Lightning's Python)."""
    import guidelab.apps.train as train_app

    guard = SyncsAreErrors(2, 8)
    build = train_app.build_callbacks
    monkeypatch.setattr(train_app, "build_callbacks", lambda *args: [*build(*args), guard])
    cfg = compose_config("train", [*gpu_overrides(tmp_path, 10), "experiment=digits_ddpm", "data.batch_size=64",
                                   "trainer.log_every_n_steps=50", "task.module.compile=false"])
    try:
        train(cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert guard.armed_steps == 7


def test_guided_sampling_steps_do_not_sync():
    """After its first step (which checks the targets), a guided sampling loop with w=0 rows skipped on the
    host, a time-dependent scale and DPM-Solver++ makes no host-device sync."""
    from guidelab.diffusion import ClassifierGuidance, GuidanceInterval, NoiseSchedule, sample
    from guidelab.diffusion.scale_schedules import scheduled_scale

    model, classifier = tiny_cuda_nets()
    scales = torch.tensor([0.0, 1.0, 2.0, 4.0]).repeat_interleave(4)  # on the host, as the sweep passes them
    armed = []

    def arm(info):
        torch.cuda.set_sync_debug_mode("error")
        armed.append(info["index"])

    for sampler in ("ddim", "dpm++2m-t"):
        try:
            x = sample(model, NoiseSchedule.linear(1000), (16, 1, 8, 8),
                       guidance=GuidanceInterval(ClassifierGuidance(classifier), 100, 900),
                       y=torch.arange(16, device="cuda") % 10, scale=scheduled_scale(scales, "linear", 1000),
                       steps=8, sampler=sampler, clip_denoised=True, callback=arm, device="cuda")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(x).all()
    assert len(armed) >= 14


def test_graphs_path_samples_what_the_compiled_path_samples():
    """fast_path=graphs (CUDA graphs) against fast_path=on, same nets and x_T, deterministic DDIM: the same samples
    up to bf16 rounding, and the eps and guidance gradient a step hands its callback are not overwritten by the
    next replay (the wrapper copies them out of the graphs' memory)."""
    from guidelab.diffusion import ClassifierGuidance, NoiseSchedule, sample
    from guidelab.evaluation.fast_nets import FastPath

    model, classifier = tiny_cuda_nets()
    noise = torch.randn(16, 1, 8, 8, device="cuda")
    scales = torch.tensor([0.5, 1.0, 2.0, 4.0]).repeat_interleave(4)  # no w=0 row: the gradient is handed on as is
    results = {}
    for mode in ("on", "graphs"):
        path = FastPath.choose(mode, "cuda")
        kept = []
        with path.sampling("cuda"):
            for _ in range(2):  # the second call replays recorded graphs
                kept.clear()
                x = sample(path.wrap(model), NoiseSchedule.linear(1000), (16, 1, 8, 8),
                           guidance=ClassifierGuidance(path.wrap(classifier)), y=torch.arange(16, device="cuda") % 10,
                           scale=scales, steps=6, sampler="ddim", noise=noise, device="cuda",
                           callback=lambda info: kept.append((info["eps"], info["eps"].clone(), info["grad"],
                                                              info["grad"].clone())))
        for eps, eps_then, grad, grad_then in kept:
            assert torch.equal(eps, eps_then) and torch.equal(grad, grad_then)
        results[mode] = x
    assert torch.isfinite(results["graphs"]).all()
    assert (results["graphs"] - results["on"]).abs().max() < 0.05


@pytest.mark.parametrize("mode", ["on", "graphs"])
def test_recompute_path_samples_what_the_compiled_path_samples(mode):
    """FastPath.recompute (the classifier's gradient compiled with RECOMPUTE_OPTIONS) against the same mode without
    it, same nets and x_T, deterministic DDIM: the same samples up to bf16 rounding and kernel order."""
    from dataclasses import replace

    from guidelab.diffusion import ClassifierGuidance, NoiseSchedule, sample
    from guidelab.evaluation.fast_nets import FastPath

    model, classifier = tiny_cuda_nets()
    noise = torch.randn(16, 1, 8, 8, device="cuda")
    results = {}
    for recompute in (False, True):
        path = replace(FastPath.choose(mode, "cuda"), recompute=recompute)
        with path.sampling("cuda"):
            for _ in range(2):  # with graphs the second call replays recorded graphs
                results[recompute] = sample(
                    path.wrap(model), NoiseSchedule.linear(1000), (16, 1, 8, 8),
                    guidance=ClassifierGuidance(path.wrap(classifier)), y=torch.arange(16, device="cuda") % 10,
                    scale=torch.tensor([0.5, 1.0, 2.0, 4.0]).repeat_interleave(4), steps=6, sampler="ddim",
                    noise=noise, device="cuda")
    assert torch.isfinite(results[True]).all()
    assert (results[True] - results[False]).abs().max() < 0.05


@pytest.mark.parametrize("fast_path", ["off", "on"])
def test_classifier_on_a_second_stream_samples_what_one_stream_samples(fast_path):
    """ClassifierGuidance(streams=True) on CUDA: the classifier's forward and backward on a side stream beside the
    eps-model give the samples of the sequential order (w=0 rows skipped, so index copies cross the streams)."""
    from guidelab.diffusion import ClassifierGuidance, NoiseSchedule, sample
    from guidelab.evaluation.fast_nets import FastPath

    path = FastPath.choose(fast_path, "cuda")
    model, classifier = (path.wrap(net) for net in tiny_cuda_nets())
    noise = torch.randn(64, 1, 8, 8, device="cuda")
    scales = torch.tensor([0.0, 1.0, 2.0, 4.0]).repeat_interleave(16)
    out = {}
    for streams in (False, True):
        out[streams] = sample(model, NoiseSchedule.linear(1000), (64, 1, 8, 8),
                              guidance=ClassifierGuidance(classifier, streams=streams),
                              y=torch.arange(64, device="cuda") % 10, scale=scales, steps=8, sampler="ddim",
                              noise=noise, device="cuda")
    assert torch.isfinite(out[True]).all()
    assert torch.allclose(out[True], out[False], atol=1e-4)


@pytest.mark.parametrize("fast_path", ["auto", "graphs"])
def test_guided_sampling_callback_on_gpu_with_the_fast_path(tmp_path, fast_path):
    """A classifier run on trainer=gpu (net compiled in place, with CUDA graphs: compile auto) with the
    guided-sampling callback, whose sweep wraps the nets again (bf16, channels_last, torch.compile: fast_path auto
    -> on; `graphs` adds CUDA graphs of its own beside the training step's, what `auto` would pick if it took graphs
    for sampling too): the curve is written and finite. Last in this file: the slowest (three short trainings and
    two compiled sweeps)."""
    import json

    ckpts = {}
    for task in ("ddpm", "eval_classifier"):
        ckpts[task] = train(compose_config("train", [*gpu_overrides(tmp_path / task, 4), f"task={task}",
                                                     "task.module.compile=false"]))["last_checkpoint"]
    out = tmp_path / "classifier"
    cfg = compose_config("train", [
        *gpu_overrides(out, 4), "task=classifier", "trainer.max_epochs=1", "trainer.max_steps=-1",
        "+trainer.limit_train_batches=4", "callbacks=guided_sampling",
        f"callbacks.guided_sampling.ddpm_checkpoint={ckpts['ddpm']}",
        f"callbacks.guided_sampling.eval_classifier_checkpoint={ckpts['eval_classifier']}",
        "callbacks.guided_sampling.settings.scales=[0.0,4.0]", "callbacks.guided_sampling.settings.samples_per_scale=32",
        "callbacks.guided_sampling.settings.steps=4", "callbacks.guided_sampling.metrics.num_real=64",
        "callbacks.guided_sampling.every_n_epochs=1", f"callbacks.guided_sampling.settings.fast_path={fast_path}"])
    train(cfg)
    (report,) = (out / "guided_sampling").iterdir()
    doc = json.loads((report / "quality_diversity.json").read_text())
    assert [row["scale"] for row in doc["rows"]] == [0.0, 4.0]
    assert all(row["fid"] is not None and row["accuracy"] is not None for row in doc["rows"])
    assert doc["settings"]["methods"]["classifier"]["fast"] == {"bf16": True, "channels_last": True, "compile": True,
                                                                "cuda_graphs": fast_path == "graphs",
                                                                "recompute": False}
