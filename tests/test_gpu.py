"""On a CUDA GPU for real (pytest -m gpu; never collected by default): trainer=gpu with the fast path."""

import pytest
import torch
from conftest import compose_config

from guidelab.apps.train import train
from guidelab.modules import load_module

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA device (run them with -m gpu on a GPU machine only)")


def gpu_overrides(out, steps: int) -> list[str]:
    return ["trainer=gpu", "trainer.devices=1", "logger=csv", f"paths.output_dir={out}", f"trainer.max_steps={steps}",
            "trainer.max_epochs=-1",
            "+trainer.limit_val_batches=2", "trainer.check_val_every_n_epoch=1", "trainer.enable_model_summary=false"]


def test_trainer_gpu_ddpm_digits_fast_path(tmp_path):
    """bf16-mixed, fused AdamW, clipping, FusedEMA, compile and channels_last (auto -> on) on CUDA."""
    cfg = compose_config("train", [*gpu_overrides(tmp_path, 30), "experiment=digits_ddpm"])
    result = train(cfg)
    raw = torch.load(result["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == 30
    assert raw["optimizer_states"][0]["param_groups"][0]["fused"] is True
    assert "current_model_state" in raw
    module = load_module(result["last_checkpoint"])
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert torch.isfinite(torch.tensor(result["metrics"]["val/loss"]))


def test_cifar10_preset_on_synthetic_data(tmp_path):
    """The cifar10_ddpm recipe (35.7M UNet) on one GPU with random data: a few compiled bf16 steps."""
    cfg = compose_config("train", [*gpu_overrides(tmp_path, 8), "experiment=cifar10_ddpm", "trainer=gpu",
                                   "data=synthetic", "data.batch_size=64", "data.num_samples=1024"])
    result = train(cfg)
    raw = torch.load(result["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == 8 and "current_model_state" in raw
    assert torch.isfinite(torch.tensor(result["metrics"]["train/loss"]))
