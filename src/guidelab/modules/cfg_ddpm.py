"""The class-conditional DDPM for classifier-free guidance (Ho & Salimans 2022).

One eps-model learns both eps(x_t | y) and eps(x_t | null): during training each label is replaced
by the null label (index `num_classes`) with probability `p_uncond`. Sampling with
`guidance="cfg", null_class=num_classes` then combines the two predictions.
"""

from __future__ import annotations

import torch

from guidelab.diffusion import sample

from .ddpm import DDPMModule


class ConditionalDDPMModule(DDPMModule):
    kind = "cfg_ddpm"

    def __init__(self, net: dict, schedule: dict, image_shape, num_classes: int, p_uncond: float = 0.1, **settings):
        """`p_uncond`: probability of replacing a label by the null label; `settings`: lr, weight_decay, ...
        as DDPMModule takes them."""
        if not (isinstance(p_uncond, (int, float)) and 0.0 <= p_uncond < 1.0):
            raise ValueError(f"p_uncond (label dropout probability) must be in [0, 1), got {p_uncond!r}")
        self._num_label_classes = int(num_classes)
        super().__init__(net=net, schedule=schedule, image_shape=image_shape, num_classes=num_classes, **settings)
        self.save_hyperparameters({"p_uncond": float(p_uncond)})

    def label_classes(self) -> int:
        return self._num_label_classes

    def training_labels(self, y: torch.Tensor) -> torch.Tensor:
        return self.drop_labels(y)

    @property
    def num_classes(self) -> int:
        return int(self.hparams.num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """eps(x_t | y); y=None or y == num_classes is the unconditional prediction."""
        return self.net(self._prepare_input(x), t, y)

    def drop_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Each label independently replaced by the null label with probability p_uncond."""
        drop = torch.rand(y.shape, device=y.device) < self.hparams.p_uncond
        return torch.where(drop, torch.full_like(y, self.num_classes), y)

    @torch.no_grad()
    def sample(self, n: int, y=None, scale=1.0, **kwargs) -> torch.Tensor:
        """Classifier-free guided samples of classes y at `scale` (0: unconditional, 1: conditional)."""
        return sample(self, self.schedule, (n, *self.hparams.image_shape), device=self.device, y=y, scale=scale,
                      guidance="cfg", null_class=self.num_classes, **kwargs)
