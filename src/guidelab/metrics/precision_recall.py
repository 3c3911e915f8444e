"""Improved precision and recall (Kynkaanniemi et al. 2019) as a torchmetrics Metric, so it syncs under DDP."""

from __future__ import annotations

from copy import deepcopy

import torch
from torch_fidelity.metric_prc import calculate_precision_recall_part
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def _cat(features) -> torch.Tensor:
    # a list state before sync (possibly empty), one tensor after a DDP sync
    return dim_zero_cat(features) if len(features) else torch.empty(0, 0)


class ImprovedPrecisionRecall(Metric):
    """precision: fraction of generated samples inside the k-NN ball of at least one real sample;
    recall: fraction of real samples inside the k-NN ball of at least one generated sample.

    Works on feature vectors [N, F]. The k-NN part is torch-fidelity's `calculate_precision_recall_part`
    (its row-batched variant, which never holds a full N x N distance matrix). With
    reset_real_features=False, reset() keeps the real features, so the real set is added once and reused
    across guidance scales."""

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
        real, fake = _cat(self.real_features), _cat(self.fake_features)
        for name, feats in (("real", real), ("generated", fake)):
            # the k-th neighbour radius excludes the point itself, so each set needs k + 1 points
            if len(feats) <= self.k:
                raise ValueError(f"precision/recall with k={self.k} needs at least {self.k + 1} {name} samples, "
                                 f"got {len(feats)}")
        # torch-fidelity's convention: first argument generated, second real
        precision, recall = calculate_precision_recall_part(fake, real, self.k, self.batch_size)
        return torch.tensor(precision), torch.tensor(recall)

    def reset(self) -> None:
        kept = None if self.reset_real_features else deepcopy(self.real_features)
        super().reset()
        if kept is not None:
            self.real_features = kept
