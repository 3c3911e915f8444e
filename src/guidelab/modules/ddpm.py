"""The unconditional DDPM: eps-prediction, uniform t, MSE (Ho et al. 2020); EMA comes from the
`guidelab.callbacks.FusedEMA` callback that guidelab-train adds when `task.ema` is set."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from guidelab.diffusion import sample

from .base import GuidelabModule, build_net
from .quartiles import QuartileMetrics


class DDPMModule(GuidelabModule):
    kind = "ddpm"

    def __init__(self, net: dict, schedule: dict, image_shape, num_classes: int = 1, lr: float = 2e-4,
                 weight_decay: float = 0.0, warmup_steps: int = 500, betas=(0.9, 0.999),
                 channels_last: bool = False, compile: bool = False):
        super().__init__(net=net, schedule=schedule, image_shape=image_shape, num_classes=num_classes, lr=lr,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, betas=betas,
                         channels_last=channels_last, compile=compile)
        self.net = self._maybe_compile(build_net(self.hparams.net, self.hparams.image_shape, self.label_classes()))
        self.val_loss_by_quartile = QuartileMetrics("val/loss", MeanMetric, self.schedule.T)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(self._prepare_input(x), t)

    def label_classes(self) -> int | None:
        """Class count the net is conditioned on; None: unconditional (see ConditionalDDPMModule)."""
        return None

    def training_labels(self, y: torch.Tensor) -> torch.Tensor | None:
        return None

    def _losses(self, x0: torch.Tensor, generator=None, y: torch.Tensor | None = None):
        """Per-image MSE of the eps prediction at uniform random t, and those t."""
        t = self.random_timesteps(len(x0), generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device if generator is None else generator.device)
        noise = noise.to(x0.device)
        x_t = self.schedule.q_sample(x0, t, noise)
        eps = self.forward_one_shape(x_t, t) if y is None else self.forward_one_shape(x_t, t, y)
        return F.mse_loss(eps.float(), noise, reduction="none").flatten(1).mean(1), t

    def training_step(self, batch, batch_idx):
        losses, _ = self._losses(batch[0], y=self.training_labels(batch[1]))
        loss = losses.mean()
        self.check_finite(loss)
        self.log("train/loss", loss)  # no prog_bar: Lightning would read it every step (a sync)
        return loss

    def validation_step(self, batch, batch_idx):
        # a fixed generator per batch makes val losses comparable across epochs
        gen = torch.Generator(device="cpu").manual_seed(batch_idx)
        labels = batch[1] if self.label_classes() is not None else None  # real labels, no dropout
        losses, t = self._losses(batch[0], gen, y=labels)
        self.log("val/loss", losses.mean(), prog_bar=True, sync_dist=True)
        self.val_loss_by_quartile.update(t, losses)

    def on_validation_epoch_end(self):
        self.val_loss_by_quartile.log_and_reset(self)

    @torch.no_grad()
    def sample(self, n: int, **kwargs) -> torch.Tensor:
        """Unguided (or guided: pass classifier=, y=, scale=) samples from this model; see guidelab.diffusion.sample."""
        return sample(self, self.schedule, (n, *self.hparams.image_shape), device=self.device, **kwargs)
