"""Every trainer config and every cifar10_* experiment, as composed, fits a few steps on the CPU.

Only the accelerator (cpu), the device count and the sizes (digits data, a small net) change; the rest
stays as the config has it: bf16-mixed, fused AdamW, gradient clipping, EMA, the DDP strategy. A GPU
config that cannot take one optimizer step (clipping refused with a fused optimizer under mixed
precision, as in issue 11) fails here without a GPU.
"""

import os
import subprocess
import sys

import pytest
import torch
from conftest import compose_config

from guidelab.apps.train import train
from guidelab.modules import load_module

STEPS = 3
# digits-size nets of the same classes the experiments use (unet_cifar10 attends at 16x16: no such map at 8x8)
SHRINK_NET = {
    "unet": ["net.base_channels=16", "net.channel_mult=[1,2]", "net.num_res_blocks=1",
             "++net.attention_resolutions=null", "++net.attention_downsample=[2]", "net.groups=8"],
    "encoder": ["net.base_channels=16", "net.channel_mult=[1,2]", "net.num_res_blocks=1",
                "++net.attention_resolutions=null", "++net.attention_downsample=[2]", "net.groups=8"],
    "cnn": ["net.width=16"],
}
CASES = {
    # name: (overrides selecting the config, net family, devices)
    "trainer=cpu": (["trainer=cpu"], "unet", 1),
    "trainer=gpu": (["trainer=gpu"], "unet", 1),
    "trainer=ddp": (["trainer=ddp"], "unet", 2),
    "trainer=ddp_cpu": (["trainer=ddp_cpu"], "unet", 2),
    "experiment=cifar10_ddpm": (["experiment=cifar10_ddpm"], "unet", 1),
    "experiment=cifar10_classifier": (["experiment=cifar10_classifier"], "encoder", 1),
    "experiment=cifar10_eval_classifier": (["experiment=cifar10_eval_classifier"], "cnn", 1),
}


def on_cpu(selection: list[str], net: str, devices: int, out) -> list[str]:
    return [*selection, "data=digits", "data.batch_size=16", "data.num_workers=0",
            *SHRINK_NET[net], "trainer.accelerator=cpu", f"trainer.devices={devices}", f"trainer.max_steps={STEPS}",
            "trainer.max_epochs=-1", "+trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
            "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false", "logger=csv", "callbacks.progress=null",
            f"paths.output_dir={out}"]


@pytest.fixture(autouse=True)
def _no_leftover_process_group():
    """DDPStrategy with one CPU device starts a gloo group in this process and sets MASTER_PORT & co.:
    undo both, so later tests (and the DDP subprocesses they start) begin clean."""
    saved = dict(os.environ)
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def clip_spy(monkeypatch):
    """Records (max_norm, grad norm after clipping) for every clip_grad_norm_ call."""
    calls = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        result = original(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters]))
        calls.append((max_norm, float(after), float(result)))
        return result

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    return calls


@pytest.mark.parametrize("name", [n for n, (_, _, devices) in CASES.items() if devices == 1])
def test_config_fits_on_cpu_as_composed(name, tmp_path, clip_spy):
    selection, net, devices = CASES[name]
    reference = compose_config("train", [*selection, f"paths.output_dir={tmp_path}"])
    cfg = compose_config("train", on_cpu(selection, net, devices, tmp_path))
    # everything but the accelerator and sizes is the config's own
    for key in ("precision", "gradient_clip_val", "strategy"):
        assert cfg.trainer.get(key) == reference.trainer.get(key), key
    assert cfg.task.ema == reference.task.ema
    result = train(cfg)
    raw = torch.load(result["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == STEPS
    assert raw["optimizer_states"][0]["param_groups"][0]["fused"] is True  # fused AdamW, as on a GPU
    clip = reference.trainer.gradient_clip_val
    assert len(clip_spy) == STEPS and all(max_norm == clip and after <= clip * (1 + 1e-4)
                                          for max_norm, after, _ in clip_spy)
    if reference.task.ema:  # EMA weights in state_dict, raw weights beside them
        assert "current_model_state" in raw
        assert any(not torch.equal(raw["state_dict"][k], raw["current_model_state"][k]) for k in raw["state_dict"])
    module = load_module(result["last_checkpoint"])
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, (_, _, devices) in CASES.items() if devices == 2])
def test_ddp_config_fits_on_two_cpu_processes(name, tmp_path):
    """Two ranks over gloo (Lightning launches the second process), as guidelab-train would run."""
    selection, net, devices = CASES[name]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "guidelab.apps.train", *on_cpu(selection, net, devices, tmp_path),
           f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    # the per-noise-quartile metrics are global already; logged as such, Lightning has nothing to warn about
    assert "sync_dist=True" not in proc.stdout + proc.stderr
    raw = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert raw["global_step"] == STEPS
    assert raw["optimizer_states"][0]["param_groups"][0]["fused"] is True
    assert "current_model_state" in raw


def test_gradient_clipping_bounds_the_update(tmp_path, clip_spy):
    """With a tiny clip value the clipped norm is the clip value: the clipping really acts on the step."""
    cfg = compose_config("train", [*on_cpu(["trainer=gpu"], "unet", 1, tmp_path), "trainer.gradient_clip_val=1e-3"])
    train(cfg)
    assert clip_spy and all(before > 1e-3 and after == pytest.approx(1e-3, rel=1e-3)
                            for _, after, before in clip_spy)


@pytest.mark.slow
def test_compile_and_channels_last_apply_in_place(tmp_path, monkeypatch):
    """Forced on (what "auto" picks on CUDA): the net is compiled in place, so checkpoints keep the plain
    net's keys and load without compile. Dynamo with the aot_eager backend here: inductor's C++ build
    takes many minutes on 2 shared cores, and the GPU tests run the real thing."""
    modes = []
    original = torch.nn.Module.compile

    def compile_without_inductor(self, *args, mode=None, **kwargs):
        modes.append(mode)
        return original(self, backend="aot_eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_without_inductor)
    cfg = compose_config("train", [*on_cpu(["trainer=gpu"], "unet", 1, tmp_path), "task.module.compile=true",
                                   "task.module.channels_last=true"])
    result = train(cfg)
    assert modes == ["default"]
    raw = torch.load(result["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == STEPS and not any("_orig_mod" in k for k in raw["state_dict"])
    module = load_module(result["last_checkpoint"])
    assert module(torch.randn(2, 1, 8, 8), torch.tensor([1, 500])).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("name", ["trainer=gpu", "experiment=cifar10_classifier"])
def test_a_compiled_net_meets_one_batch_size_in_validation(name, tmp_path, compiled_graphs):
    """Digits' 180 validation images in batches of 16 end on a batch of 4. A compiled net met it as a new
    shape and recompiled (3 graphs a run); the partial batch is now padded, so training compiles the net
    twice: once for validation, once for training. Graphs are counted by a backend that runs them eagerly."""
    selection, net, devices = CASES[name]
    overrides = [o for o in on_cpu(selection, net, devices, tmp_path) if "limit_val_batches" not in o]
    cfg = compose_config("train", [*overrides, f"+trainer.limit_train_batches={STEPS}", "task.module.compile=true"])
    train(cfg)
    repeats = cfg.task.module.get("val_repeats", 1)  # the noisy classifier may see each image several times
    assert sorted(rows for _, rows in compiled_graphs) == sorted([16, 16 * repeats]), compiled_graphs


def test_forward_one_shape_pads_a_compiled_net_and_keeps_the_rows(monkeypatch):
    """The padded forward returns the unpadded rows' outputs; an eager net and training run as given."""
    from guidelab.modules import DDPMModule

    seen = []  # rows of each call of the "compiled" net: a stand-in for torch.compile that records them

    def recording_compile(self, *args, **kwargs):
        self._compiled_call_impl = lambda x, *rest: seen.append(len(x)) or self._call_impl(x, *rest)

    monkeypatch.setattr(torch.nn.Module, "compile", recording_compile)
    net = {"_target_": "guidelab.nets.UNet", "base_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
           "attention_downsample": [2], "groups": 8}
    torch.manual_seed(0)
    module = DDPMModule(net, {"kind": "linear", "T": 100}, [1, 8, 8], compile=True).eval()
    x, t = torch.randn(6, 1, 8, 8), torch.tensor([0, 10, 20, 30, 40, 99])
    with torch.no_grad():
        full, part = module.forward_one_shape(x, t), module.forward_one_shape(x[:4], t[:4])
        torch.testing.assert_close(part, full[:4])
        torch.testing.assert_close(part, module.net.forward(x[:4], t[:4]))  # the plain net on 4 rows
        module.train()
        module.forward_one_shape(x[:3], t[:3])
    assert seen == [6, 6, 3]
    eager, eager_rows = DDPMModule(net, {"kind": "linear", "T": 100}, [1, 8, 8]).eval(), []
    eager.net.register_forward_pre_hook(lambda _, inputs: eager_rows.append(len(inputs[0])))
    with torch.no_grad():
        eager.forward_one_shape(x, t), eager.forward_one_shape(x[:4], t[:4])
    assert eager_rows == [6, 4]


@pytest.mark.parametrize("value", ["sometimes", 3])
def test_bad_fast_path_values_fail_before_training(value, tmp_path):
    cfg = compose_config("train", [*on_cpu(["trainer=cpu"], "unet", 1, tmp_path), f"task.module.compile={value}"])
    with pytest.raises(ValueError, match="compile must be"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("experiment", ["cifar10_ddpm", "cifar10_classifier", "cifar10_eval_classifier"])
def test_cifar10_experiments_on_one_gpu_take_one_device(experiment, tmp_path):
    """`experiment=cifar10_* trainer=gpu` (the README's one-GPU line) must not keep the 8-GPU device count."""
    cfg = compose_config("train", [f"experiment={experiment}", "trainer=gpu", f"paths.output_dir={tmp_path}"])
    assert cfg.trainer.devices == 1 and cfg.trainer.get("strategy") is None
    assert compose_config("train", [f"experiment={experiment}", "trainer=ddp", f"paths.output_dir={tmp_path}"]
                          ).trainer.devices == 8


@pytest.mark.parametrize("graphs", [False, True], ids=["grad-set-to-none", "cuda-graphs-forced"])
def test_accumulated_gradients_get_buffers_of_their_own_where_cuda_graphs_replay(graphs, tmp_path, monkeypatch):
    """trainer.accumulate_grad_batches=2. Where CUDA graphs replay the backward (forced here: on the CPU
    compile=reduce-overhead compiles without graphs), every .grad must be a buffer of its own that stays from
    step to step: a .grad in the graphs' memory is overwritten by the next replay. Training must give the same
    weights either way. Without graphs, Lightning's default stays (.grad set to None: new tensors each step)."""
    from guidelab.modules.base import GuidelabModule

    if graphs:
        monkeypatch.setattr(GuidelabModule, "replays_cuda_graphs", lambda self: True)
    grads_per_step = []
    clip = GuidelabModule.configure_gradient_clipping

    def record_grads(self, optimizer, *args, **kwargs):  # called once per optimizer step, after the backward passes
        grads_per_step.append([p.grad for group in optimizer.param_groups for p in group["params"]])
        return clip(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(GuidelabModule, "configure_gradient_clipping", record_grads)
    cfg = compose_config("train", [*on_cpu(["trainer=gpu"], "unet", 1, tmp_path), "+trainer.accumulate_grad_batches=2"])
    result = train(cfg)
    assert len(grads_per_step) == STEPS and all(g is not None for g in grads_per_step[0])
    same_buffers = all(a is b for step in grads_per_step[1:] for a, b in zip(grads_per_step[0], step))
    assert same_buffers == graphs
    weights = torch.load(result["last_checkpoint"], weights_only=True)["current_model_state"]
    if graphs:  # against a run with the default zero_grad, same seed and batches
        monkeypatch.undo()
        reference = train(compose_config("train", [*on_cpu(["trainer=gpu"], "unet", 1, tmp_path / "reference"),
                                                   "+trainer.accumulate_grad_batches=2"]))
        expected = torch.load(reference["last_checkpoint"], weights_only=True)["current_model_state"]
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in weights)


# a module built without training, for the rules that resolve on a device (the module is never moved there)
TINY_UNET = {"_target_": "guidelab.nets.UNet", "base_channels": 8, "channel_mult": [1], "num_res_blocks": 1,
             "attention_resolutions": [], "groups": 4}


@pytest.mark.parametrize("compile_value,device,expected", [
    ("reduce-overhead", "cuda", True), ("max-autotune", "cuda", True), ("default", "cuda", False),
    ("max-autotune-no-cudagraphs", "cuda", False), (False, "cuda", False), ("reduce-overhead", "cpu", False)])
def test_which_modes_replay_cuda_graphs(compile_value, device, expected):
    """The modes that replay CUDA graphs, on a CUDA device only. The device is set on the module without moving
    it: what is checked is the rule, which a GPU run follows (tests/test_gpu.py trains with accumulation)."""
    from guidelab.modules import DDPMModule

    module = DDPMModule(TINY_UNET, {"kind": "linear", "T": 100}, [1, 8, 8], compile=compile_value)  # compiles lazily
    module._device = torch.device(device, 0)  # LightningModule.device reads this attribute
    assert module.replays_cuda_graphs() == expected


@pytest.mark.parametrize("strategy_name,device,expected_mode", [
    ("single", "cuda", "reduce-overhead"), ("ddp", "cuda", "default"), ("single", "cpu", None), ("ddp", "cpu", None)])
def test_auto_compiles_with_cuda_graphs_on_one_cuda_device_only(strategy_name, device, expected_mode, monkeypatch,
                                                                 caplog):
    """`compile: auto` (every task's default) resolves in `setup` for the strategy's device: CUDA graphs
    ("reduce-overhead", 1.96x the "default" mode's training rate on an H100) on one CUDA device, the
    "default" mode under DDP (graphs there have not run on GPUs), eager on the CPU. The strategy is built for a
    CUDA device without one: only the rule is checked here; tests/test_gpu.py trains with it on a GPU."""
    from types import SimpleNamespace

    from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

    from guidelab.modules import DDPMModule

    modes = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *args, mode=None, **kwargs: modes.append(mode))
    root = torch.device(device, 0) if device == "cuda" else torch.device("cpu")
    strategy = SingleDeviceStrategy(device=root) if strategy_name == "single" else DDPStrategy(parallel_devices=[root])
    module = DDPMModule(TINY_UNET, {"kind": "linear", "T": 100}, [1, 8, 8], compile="auto", channels_last=False)
    monkeypatch.setattr(DDPMModule, "trainer", property(lambda self: SimpleNamespace(strategy=strategy)))
    with caplog.at_level("INFO"):
        module.setup("fit")
    assert modes == ([expected_mode] if expected_mode else [])
    said = {"reduce-overhead": "torch.compile 'reduce-overhead' mode (CUDA graphs)",
            "default": "torch.compile 'default' mode,", None: "torch.compile off"}[expected_mode]
    assert f"ddpm net on {device}: {said}" in caplog.text  # the run log says how the net runs
    module._device = root  # LightningModule.device reads this attribute; the module is not moved
    assert module.replays_cuda_graphs() == (expected_mode == "reduce-overhead")
