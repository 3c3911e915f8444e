"""All quality-diversity metrics of one set of generated samples, in one feature space, against a cached real set."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.utilities.distributed import gather_all_tensors

from .features import _FrozenModule, make_feature_extractor
from .precision_recall import ImprovedPrecisionRecall


def _total_over_ranks(count: torch.Tensor) -> int:
    if dist.is_available() and dist.is_initialized():
        return int(sum(gather_all_tensors(count)))
    return int(count)


class _OncePerBatch(_FrozenModule):
    """A feature extractor that computes a batch's features once: torchmetrics' FID calls it on the images it is
    given (a custom module gets them untouched), and precision/recall then reuses the same features. Through
    Inception that halves the cost of scoring."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor
        self.num_features = extractor.num_features
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0] is images:
            return self._last[1]
        return self.extractor(images)

    @contextmanager
    def shared(self, images: torch.Tensor):
        """Within the block, the features of `images` (this very tensor) are computed once; yields them."""
        self._last = (images, self.extractor(images))
        try:
            yield self._last[1]
        finally:
            self._last = None  # holds no batch past its update


class QualityDiversityMetrics(_FrozenModule):
    """fid (torchmetrics), accuracy of samples against their targets by the EVALUATION classifier (never the
    guidance classifier, which guided samples can fool), and improved precision / recall (k-NN, k=3).

    Add the real set once with update_real(); per guidance scale: reset_fake(), update_fake(), compute().
    Every state is a torchmetrics state, so under DDP each rank updates its own shard and compute() syncs;
    every rank must then call compute()."""

    def __init__(self, eval_classifier: nn.Module, num_classes: int, features: str = "classifier",
                 inception_weights=None, k: int = 3):
        super().__init__()
        self.features_kind = features
        self.eval_classifier = eval_classifier.requires_grad_(False)
        self.extractor = _OncePerBatch(make_feature_extractor(features, eval_classifier, inception_weights))
        # FID keeps its sums in float64; reset_real_features=False makes reset() keep the real statistics.
        self.fid = FrechetInceptionDistance(feature=self.extractor, reset_real_features=False)
        self.precision_recall = ImprovedPrecisionRecall(k=k, reset_real_features=False)
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.min_samples = max(2, k + 1)
        self.eval()

    @torch.no_grad()
    def update_real(self, images: torch.Tensor) -> None:
        with self.extractor.shared(images) as features:
            self.fid.update(images, real=True)
            self.precision_recall.update(features, real=True)

    @torch.no_grad()
    def update_fake(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        with self.extractor.shared(images) as features:
            self.fid.update(images, real=False)
            self.precision_recall.update(features, real=False)
        self.accuracy.update(self.eval_classifier(images.float()), targets)

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        # Checked on counts summed over ranks and before any metric syncs: a metric whose compute() raises
        # inside torchmetrics' sync context stays in the synced state under DDP.
        real_n = _total_over_ranks(self.fid.real_features_num_samples)
        fake_n = _total_over_ranks(self.fid.fake_features_num_samples)
        if min(real_n, fake_n) < self.min_samples:
            raise ValueError(
                f"need at least {self.min_samples} real and {self.min_samples} generated samples (FID needs 2, "
                f"precision/recall with k={self.precision_recall.k} needs k+1); got {real_n} real and {fake_n} generated"
            )
        precision, recall = self.precision_recall.compute()
        return {"fid": float(self.fid.compute()), "accuracy": float(self.accuracy.compute()),
                "precision": float(precision), "recall": float(recall)}

    def reset_fake(self) -> None:
        """Forget the generated samples; the real set stays."""
        self.fid.reset()
        self.precision_recall.reset()
        self.accuracy.reset()


@torch.no_grad()
def accuracy_of(classifier: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of a classifier on labelled images (e.g. the evaluation classifier on real data),
    computed in eval mode; the classifier's train/eval mode is restored afterwards."""
    was_training = classifier.training
    classifier.eval()
    try:
        correct = sum((classifier(x).argmax(1) == y.to(x.device)).sum().item()
                      for x, y in zip(images.split(batch_size), targets.split(batch_size)))
    finally:
        classifier.train(was_training)
    return correct / max(len(targets), 1)
