"""Classifiers: the noise-aware guidance classifier and the clean evaluation classifier."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from .base import GuidelabModule, build_net
from .quartiles import QuartileMetrics


class ClassifierModule(GuidelabModule):
    """Cross-entropy classifier; the subclass fixes what it reads: NoisyClassifierModule images noised by
    q(x_t | x_0) with t uniform over [0, T) (the guidance classifier, which must use the same schedule as
    the DDPM it guides), EvalClassifierModule clean images (the evaluation classifier)."""

    noisy: bool

    def __init__(self, net: dict, schedule: dict, image_shape, num_classes: int, lr: float = 3e-4,
                 weight_decay: float = 0.05, warmup_steps: int = 100, betas=(0.9, 0.999),
                 channels_last: bool = False, compile: bool = False):
        if not self.kind:
            raise TypeError("ClassifierModule is the shared base: build a NoisyClassifierModule or an "
                            "EvalClassifierModule")
        super().__init__(net=net, schedule=schedule, image_shape=image_shape, num_classes=num_classes, lr=lr,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, betas=betas,
                         channels_last=channels_last, compile=compile)
        self.net = self._maybe_compile(build_net(self.hparams.net, self.hparams.image_shape, int(num_classes)))
        n = int(num_classes)
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc = MulticlassAccuracy(n, average="micro")

    @property
    def num_classes(self) -> int:
        return int(self.hparams.num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self._prepare_input(x), t)

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.features(self._prepare_input(x), t)

    @property
    def num_features(self) -> int:
        return int(self.net.num_features)

    def _noised(self, x0, generator=None):
        """The classifier's input for clean images x0 and the timestep indices it reads (None: clean)."""
        if not self.noisy:
            return x0, None
        t = self.random_timesteps(len(x0), generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device if generator is None else generator.device)
        return self.schedule.q_sample(x0, t, noise.to(x0.device)), t

    def training_step(self, batch, batch_idx):
        x0, y = batch
        x, t = self._noised(x0)
        logits = self(x, t)
        loss = F.cross_entropy(logits.float(), y)
        self.check_finite(loss)
        self.train_acc(logits, y)
        self.log("train/loss", loss)  # no prog_bar: Lightning would read it every step (a sync)
        self.log("train/acc", self.train_acc)  # the bar shows both (RichProgressBarEveryN)
        return loss

    def validation_step(self, batch, batch_idx):
        x0, y = batch
        x, t = self._noised(x0, torch.Generator(device="cpu").manual_seed(batch_idx))
        logits = self.forward_one_shape(x, t)
        losses = F.cross_entropy(logits.float(), y, reduction="none")
        self.val_acc(logits, y)
        self.log("val/loss", losses.mean(), prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        return {"timesteps": t, "logits": logits, "losses": losses}


class NoisyClassifierModule(ClassifierModule):
    """The guidance classifier: reads x_t at every noise level; validation also per noise quartile."""

    kind = "classifier"
    noisy = True

    def __init__(self, net: dict, schedule: dict, image_shape, num_classes: int, val_repeats: int = 1, **settings):
        """`val_repeats`: each validation image at that many noise levels (steadier per-quartile figures on
        small validation sets); `settings`: lr, weight_decay, ... as ClassifierModule takes them."""
        if val_repeats < 1:
            raise ValueError(f"val_repeats must be >= 1, got {val_repeats}")
        super().__init__(net=net, schedule=schedule, image_shape=image_shape, num_classes=num_classes, **settings)
        self.save_hyperparameters({"val_repeats": val_repeats})
        n, T = int(num_classes), self.schedule.T
        self.val_acc_by_quartile = QuartileMetrics("val/acc", partial(MulticlassAccuracy, n, average="micro"), T)
        self.val_loss_by_quartile = QuartileMetrics("val/loss", MeanMetric, T)

    def validation_step(self, batch, batch_idx):
        x0, y = batch
        repeats = self.hparams.val_repeats
        x0, y = x0.repeat(repeats, 1, 1, 1), y.repeat(repeats)
        out = super().validation_step((x0, y), batch_idx)
        self.val_acc_by_quartile.update(out["timesteps"], out["logits"], y)
        self.val_loss_by_quartile.update(out["timesteps"], out["losses"])
        return out

    def on_validation_epoch_end(self):
        self.val_acc_by_quartile.log_and_reset(self)
        self.val_loss_by_quartile.log_and_reset(self)


class EvalClassifierModule(ClassifierModule):
    """The independent evaluation classifier: clean images only; scores guided samples and gives FID features."""

    kind = "eval_classifier"
    noisy = False
