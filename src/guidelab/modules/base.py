"""What the DDPM and classifier modules share: building the net, the schedule, the optimizer, metadata."""

from __future__ import annotations

import math

import hydra.utils
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from guidelab.diffusion import NoiseSchedule


def plain(value):
    """Hydra containers to plain Python, so checkpoints load with weights_only=True."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, tuple):
        return list(value)
    return value


def build_net(net: dict, image_shape, num_classes: int | None = None) -> torch.nn.Module:
    """Instantiate a `_target_` net config, filling in the data's shape (and class count) unless set."""
    channels, height, width = image_shape
    if height != width:
        raise ValueError(f"nets take square images, got image_shape={list(image_shape)}")
    kwargs = {"image_size": height, "in_channels": channels}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    kwargs = {k: v for k, v in kwargs.items() if k not in net}
    return hydra.utils.instantiate(net, **kwargs, _convert_="all")


class GuidelabModule(pl.LightningModule):
    """Base: holds `net`, the noise `schedule`, image shape and class count; AdamW with linear warmup."""

    kind: str = ""

    def __init__(self, *, net: dict, schedule: dict, image_shape, num_classes: int, lr: float, weight_decay: float,
                 warmup_steps: int, betas=(0.9, 0.999), channels_last: bool = False, compile: bool = False):
        super().__init__()
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be [C, H, W], got {image_shape!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        # plain containers only, so checkpoints load with weights_only=True; subclasses add their own keys.
        # `kind` is no argument: load_module picks the class by it (modules/checkpoint.py MODULES)
        self.save_hyperparameters({"kind": self.kind, "net": plain(net), "schedule": plain(schedule),
                                   "image_shape": plain(image_shape), "num_classes": int(num_classes), "lr": lr,
                                   "weight_decay": weight_decay, "warmup_steps": warmup_steps, "betas": plain(betas),
                                   "channels_last": channels_last, "compile": compile})
        self.schedule = NoiseSchedule.from_config(**self.hparams.schedule)

    @property
    def meta(self) -> dict:
        """What two checkpoints must agree on to be used together."""
        hp = self.hparams
        return {"kind": self.kind, "schedule": dict(hp.schedule), "image_shape": list(hp.image_shape),
                "num_classes": int(hp.num_classes)}

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def _maybe_compile(self, net: torch.nn.Module) -> torch.nn.Module:
        if self.hparams.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return torch.compile(net) if self.hparams.compile else net

    def random_timesteps(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.device if generator is None else generator.device
        return torch.randint(0, self.schedule.T, (batch,), device=device, generator=generator).to(self.device)

    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}: stopping. The last "
                "good checkpoint is untouched; lower lr, enable gradient clipping or check the data."
            )

    def configure_optimizers(self):
        hp = self.hparams
        fused = self.device.type == "cuda"
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas),
                                fused=fused)
        warmup = max(int(hp.warmup_steps), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
