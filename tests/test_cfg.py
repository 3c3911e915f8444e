"""Classifier-free guidance: the conditional DDPM, label dropout, CFG through `sample`, checkpoint and sweep."""

import json

import pytest
import torch
from conftest import compose_config, tiny_train_overrides

from guidelab.apps.sweep import run_sweep
from guidelab.apps.train import train
from guidelab.diffusion import sample
from guidelab.modules import ConditionalDDPMModule, load_module
from guidelab.modules.checkpoint import read_checkpoint

DIGITS_UNET = {"_target_": "guidelab.nets.UNet", "base_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
               "attention_resolutions": [4], "num_heads": 4, "dropout": 0.0, "groups": 8}
NUM_CLASSES = 10


def make_module(p_uncond=0.1, seed=0) -> ConditionalDDPMModule:
    """A real module whose zero-initialised output layer is randomised, so eps depends on x, t and y."""
    torch.manual_seed(seed)
    module = ConditionalDDPMModule(DIGITS_UNET, {"kind": "linear", "T": 100}, [1, 8, 8], NUM_CLASSES, p_uncond=p_uncond)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.eval()


def first_step_eps(module, y, scale, noise):
    captured = []
    sample(module, module.schedule, noise.shape, y=y, scale=scale, steps=5, sampler="ddim", noise=noise,
           guidance="cfg", null_class=NUM_CLASSES, callback=lambda info: captured.append(info))
    first = captured[0]
    return first["eps"], first["x"], first["timestep"]


def test_cfg_scale_0_is_unconditional_and_scale_1_conditional():
    module = make_module()
    y = torch.arange(6) % NUM_CLASSES
    noise = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    eps0, x, t = first_step_eps(module, y, 0.0, noise)
    eps1, _, _ = first_step_eps(module, y, 1.0, noise)
    with torch.no_grad():
        uncond = module(x, t, torch.full_like(y, NUM_CLASSES))
        cond = module(x, t, y)
    assert (cond - uncond).abs().max() > 1e-3  # the labels matter, so the comparison below means something
    torch.testing.assert_close(eps0, uncond, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eps1, cond, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(module(x, t), uncond)  # y=None is the null label


def test_label_dropout_rate_and_validation_uses_real_labels(monkeypatch):
    module = make_module(p_uncond=0.3).train()
    seen = []
    net_forward = module.net.forward

    def recording_forward(x, t, y=None):
        seen.append(y.clone())
        return net_forward(x, t, y)

    monkeypatch.setattr(module.net, "forward", recording_forward)
    n = 2000
    y = torch.randint(0, NUM_CLASSES, (n,), generator=torch.Generator().manual_seed(0))
    x0 = torch.rand(n, 1, 8, 8) * 2 - 1
    torch.manual_seed(0)
    module.training_step((x0, y), 0)
    dropped = seen[0] == NUM_CLASSES
    # binomial(2000, 0.3): sd 0.010, so +-0.04 is a 4-sigma band
    assert abs(dropped.float().mean().item() - 0.3) < 0.04
    assert torch.equal(seen[0][~dropped], y[~dropped])  # kept labels are untouched

    module.validation_step((x0[:64], y[:64]), 0)
    assert torch.equal(seen[1], y[:64])


def test_p_uncond_is_validated():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="p_uncond"):
            make_module(p_uncond=bad)


def test_per_sample_scales_match_separate_calls():
    module = make_module(seed=3)
    scales = torch.tensor([0.0, 1.0, 3.0, 5.0])
    y = torch.tensor([2, 7, 7, 0])
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    kwargs = dict(steps=8, sampler="ddim", eta=0.0, guidance="cfg", null_class=NUM_CLASSES)
    together = sample(module, module.schedule, noise.shape, y=y, scale=scales, noise=noise, **kwargs)
    for k in range(4):
        alone = sample(module, module.schedule, (1, 1, 8, 8), y=y[k:k + 1], scale=float(scales[k]),
                       noise=noise[k:k + 1], **kwargs)
        torch.testing.assert_close(together[k:k + 1], alone, atol=1e-4, rtol=1e-4)
    assert (together[2] - together[3]).abs().max() > 1e-3  # different scales, same label: different samples


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg_ckpts")
    return {task: train(compose_config("train", tiny_train_overrides(root / task, task, steps=3)))["last_checkpoint"]
            for task in ("cfg_ddpm", "eval_classifier")}


def test_checkpoint_round_trip(tiny_checkpoints):
    path = tiny_checkpoints["cfg_ddpm"]
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["kind"] == "cfg_ddpm" and hp["p_uncond"] == 0.1 and hp["num_classes"] == NUM_CLASSES
    module = load_module(path, "cfg_ddpm")
    assert isinstance(module, ConditionalDDPMModule) and module.num_classes == NUM_CLASSES
    assert module.net.label_embed.num_embeddings == NUM_CLASSES + 1
    assert module.meta["kind"] == "cfg_ddpm"
    saved = read_checkpoint(path)["state_dict"]
    assert set(module.state_dict()) == set(saved)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)


def test_cfg_sweep_without_classifier(tiny_checkpoints, tmp_path):
    cfg = compose_config("sweep", [
        f"ddpm_checkpoint={tiny_checkpoints['cfg_ddpm']}",
        f"eval_classifier_checkpoint={tiny_checkpoints['eval_classifier']}",
        f"paths.output_dir={tmp_path}",
        "logger=none",
        "guidance.scales=[0.0,1.0,3.0]",
        "guidance.samples_per_scale=20",
        "guidance.steps=4",
        "metrics.num_real=100",
    ])
    assert cfg.classifier_checkpoint is None
    run_sweep(cfg)
    doc = json.loads((tmp_path / "quality_diversity.json").read_text())
    assert {row["method"] for row in doc["rows"]} == {"cfg"}  # method=auto picks CFG for a cfg_ddpm checkpoint
    assert all(row["nfe_per_sample"] == 2 * 4 for row in doc["rows"])
    assert [row["scale"] for row in doc["rows"]] == [0.0, 1.0, 3.0]
    assert all(row["fid"] is not None and row["accuracy"] is not None for row in doc["rows"])
    assert doc["timings"]["sampling_s"] > 0
