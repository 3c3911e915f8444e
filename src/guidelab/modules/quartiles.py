"""Validation metrics per noise quartile: how a model does at low, middle and high noise.

Ho et al. 2020 (DDPM) and Dhariwal & Nichol 2021 (noise-aware classifiers) report quality by noise
level; a single average hides that a classifier is at chance on the noisiest quarter."""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torchmetrics import Metric, SumMetric

NUM_QUARTILES = 4


def noise_quartile(timesteps: torch.Tensor, T: int) -> torch.Tensor:
    """0 for timestep indices in the lowest-noise quarter of [0, T), ..., 3 for the highest."""
    return (timesteps * NUM_QUARTILES // T).clamp(max=NUM_QUARTILES - 1)


class QuartileMetrics(torch.nn.Module):
    """One torchmetrics metric per noise quartile, logged as `<name>_q0` ... `<name>_q3`.

    `update(timesteps, *inputs)` sends each sample to the metric of its timestep's quartile;
    `log_and_reset(module)` logs every quartile that received samples this epoch on any process.
    Under DDP every rank computes the same quartiles (compute() gathers across ranks, so all must call
    it): the sample counts, updated on every call, decide which."""

    def __init__(self, name: str, make_metric: Callable[[], Metric], T: int):
        super().__init__()
        self.name, self.T = name, int(T)
        self.metrics = torch.nn.ModuleList(make_metric() for _ in range(NUM_QUARTILES))
        self.samples = torch.nn.ModuleList(SumMetric() for _ in range(NUM_QUARTILES))

    def update(self, timesteps: torch.Tensor, *inputs: torch.Tensor) -> None:
        quartile = noise_quartile(timesteps, self.T)
        for q, (metric, samples) in enumerate(zip(self.metrics, self.samples)):
            mask = quartile == q
            samples.update(mask.sum())
            if mask.any():
                metric.update(*(x[mask] for x in inputs))

    def log_and_reset(self, module: pl.LightningModule) -> None:
        for q, (metric, samples) in enumerate(zip(self.metrics, self.samples)):
            if samples.compute() > 0:  # the count over all ranks
                # compute() already holds every rank's samples, so the sync's mean of equal values changes nothing;
                # it is what tells Lightning the value is global (else it warns once per quartile under DDP)
                module.log(f"{self.name}_q{q}", metric.compute(), sync_dist=True)
            metric.reset()
            samples.reset()
