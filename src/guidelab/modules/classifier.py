"""Classifiers: the noise-aware guidance classifier and the clean evaluation classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from .base import NUM_QUARTILES, GuidelabModule, build_net, noise_quartile


class ClassifierModule(GuidelabModule):
    """Cross-entropy on images noised by q(x_t | x_0) with t uniform over [0, T) (`noisy=True`, the
    guidance classifier, which must use the same schedule as the DDPM it guides), or on clean images
    (`noisy=False`, the evaluation classifier)."""

    kind = "classifier"

    def __init__(self, net: dict, schedule: dict, image_shape, num_classes: int, noisy: bool = True,
                 lr: float = 3e-4, weight_decay: float = 0.05, warmup_steps: int = 100, betas=(0.9, 0.999),
                 channels_last: bool = False, compile: bool = False, val_repeats: int = 1, kind: str | None = None):
        super().__init__(net, schedule, image_shape, num_classes, lr, weight_decay, warmup_steps, betas,
                         channels_last, compile)
        self.kind = "classifier" if noisy else "eval_classifier"
        self.save_hyperparameters({"noisy": noisy, "val_repeats": val_repeats, "kind": self.kind})
        if val_repeats < 1:
            raise ValueError(f"val_repeats must be >= 1, got {val_repeats}")
        self.net = self._maybe_compile(build_net(self.hparams.net, self.hparams.image_shape, int(num_classes)))
        n = int(num_classes)
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc_by_quartile = torch.nn.ModuleList(MulticlassAccuracy(n, average="micro") for _ in range(NUM_QUARTILES))
        self.val_loss_by_quartile = torch.nn.ModuleList(MeanMetric() for _ in range(NUM_QUARTILES))

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
        if not self.hparams.noisy:
            return x0, torch.zeros(len(x0), dtype=torch.long, device=x0.device)
        t = self.random_timesteps(len(x0), generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device if generator is None else generator.device)
        return self.schedule.q_sample(x0, t, noise.to(x0.device)), t

    def training_step(self, batch, batch_idx):
        x0, y = batch
        x, t = self._noised(x0)
        logits = self(x, t if self.hparams.noisy else None)
        loss = F.cross_entropy(logits.float(), y)
        self.check_finite(loss)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x0, y = batch
        if self.hparams.noisy and self.hparams.val_repeats > 1:
            # each val image at several noise levels: steadier per-quartile figures on small val sets
            x0, y = x0.repeat(self.hparams.val_repeats, 1, 1, 1), y.repeat(self.hparams.val_repeats)
        x, t = self._noised(x0, torch.Generator(device="cpu").manual_seed(batch_idx))
        logits = self(x, t if self.hparams.noisy else None)
        losses = F.cross_entropy(logits.float(), y, reduction="none")
        self.val_acc(logits, y)
        self.log("val/loss", losses.mean(), prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        if self.hparams.noisy:
            quartile = noise_quartile(t, self.schedule.T)
            for q in range(NUM_QUARTILES):
                mask = quartile == q
                if mask.any():
                    self.val_acc_by_quartile[q].update(logits[mask], y[mask])
                    self.val_loss_by_quartile[q].update(losses[mask])

    def on_validation_epoch_end(self):
        for q in range(NUM_QUARTILES):
            acc, loss = self.val_acc_by_quartile[q], self.val_loss_by_quartile[q]
            if loss.update_count:
                self.log(f"val/acc_q{q}", acc.compute())
                self.log(f"val/loss_q{q}", loss.compute())
            acc.reset()
            loss.reset()


class NoisyClassifierModule(ClassifierModule):
    """The guidance classifier: reads x_t at every noise level."""

    def __init__(self, *args, **kwargs):
        kwargs.pop("noisy", None)
        super().__init__(*args, noisy=True, **kwargs)


class EvalClassifierModule(ClassifierModule):
    """The independent evaluation classifier: clean images only; scores guided samples and gives FID features."""

    def __init__(self, *args, **kwargs):
        kwargs.pop("noisy", None)
        super().__init__(*args, noisy=False, **kwargs)
