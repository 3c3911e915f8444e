"""Improved precision and recall (Kynkaanniemi et al. 2019) as a torchmetrics Metric (syncs under DDP)."""

from __future__ import annotations

from copy import deepcopy

import torch
from torch_fidelity.metric_prc import calculate_precision_recall_part
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class ImprovedPrecisionRecall(Metric):
    """precision: fraction of generated samples inside the k-NN ball of some real sample;
    recall: fraction of real samples inside the k-NN ball of some generated sample.

    The k-NN computation is torch-fidelity's. With reset_real_features=False, reset() keeps the
    real features, so a real set is embedded once and reused across guidance scales."""

    full_state_update = False

    def __init__(self, k: int = 3, reset_real_features: bool = True, batch_size: int = 10000, **kwargs):
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.batch_size = batch_size
        self.reset_real_features = reset_real_features
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor, real: bool) -> None:
        (self.real_features if real else self.fake_features).append(features.detach().float().flatten(1))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        for name, feats in (("real", real), ("generated", fake)):
            if len(feats) <= self.k:
                raise ValueError(f"precision/recall with k={self.k} needs more than {self.k} {name} samples, got {len(feats)}")
        precision, recall = calculate_precision_recall_part(fake, real, self.k, self.batch_size)
        return torch.tensor(precision), torch.tensor(recall)

    def reset(self) -> None:
        kept = deepcopy(self.real_features) if not self.reset_real_features else None
        super().reset()
        if kept is not None:
            self.real_features = kept
