"""All quality-diversity metrics of one set of generated samples, in one feature space, against a cached real set."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance

from .features import make_feature_extractor
from .precision_recall import ImprovedPrecisionRecall


class QualityDiversityMetrics(nn.Module):
    """fid (torchmetrics), accuracy of samples against their targets by the EVALUATION classifier (never the
    guidance classifier, which guided samples can fool), and improved precision / recall.

    Add the real set once with update_real(); per guidance scale: reset_fake(), update_fake(), compute().
    Every state is a torchmetrics state, so under DDP each rank updates its shard and compute() syncs."""

    def __init__(self, eval_classifier: nn.Module, num_classes: int, features: str = "classifier",
                 inception_weights=None, k: int = 3):
        super().__init__()
        self.features_kind = features
        self.eval_classifier = eval_classifier.eval().requires_grad_(False)
        self.extractor = make_feature_extractor(features, eval_classifier, inception_weights)
        self.fid = FrechetInceptionDistance(feature=self.extractor, reset_real_features=False)
        self.precision_recall = ImprovedPrecisionRecall(k=k, reset_real_features=False)
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")

    @torch.no_grad()
    def update_real(self, images: torch.Tensor) -> None:
        self.fid.update(images, real=True)
        self.precision_recall.update(self.extractor(images), real=True)

    @torch.no_grad()
    def update_fake(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.fid.update(images, real=False)
        self.precision_recall.update(self.extractor(images), real=False)
        self.accuracy.update(self.eval_classifier(images.float()), targets)

    def compute(self) -> dict[str, float]:
        real_n, fake_n = int(self.fid.real_features_num_samples), int(self.fid.fake_features_num_samples)
        if real_n < 2 or fake_n < 2:
            raise ValueError(f"FID needs at least 2 real and 2 generated samples, got {real_n} real and {fake_n} generated")
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
    """Top-1 accuracy of a classifier on labelled images (e.g. the evaluation classifier on real data)."""
    correct = sum((classifier(x).argmax(1) == y).sum().item()
                  for x, y in zip(images.split(batch_size), targets.split(batch_size)))
    return correct / len(targets)
