"""Projected guidance (after APG, Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High
Guidance Scales in Diffusion Models"): the guidance update, taken in x0 space, has its norm bounded
and is split into the parts parallel and orthogonal to the unguided x0 prediction; the parallel part
(which mostly saturates) is down-weighted.

    d     = x0_hat(eps~) - x0_hat(eps)              (the inner method's update in x0 space)
    d     = d * min(1, max_norm / ||d||)            (per sample)
    d'    = parallel_weight * d_par + d_orth        (d_par = <d, x0>/<x0, x0> x0, x0 the unguided prediction)
    eps'  = eps - sqrt(abar) / sqrt(1 - abar) * d'  (the eps whose x0_hat is x0_hat(eps) + d')

Wraps any eps-form method; APG's momentum term is left out.
"""

from __future__ import annotations

import torch

from .base import Guidance, GuidanceStep, GuidedPrediction

__all__ = ["ProjectedGuidance"]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.dim() - 1)))


class ProjectedGuidance(Guidance):
    def __init__(self, inner: Guidance, *, parallel_weight: float = 0.0, max_norm: float | None = None):
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"projected guidance: max_norm must be > 0 or null, got {max_norm}")
        self.inner, self.parallel_weight, self.max_norm = inner, float(parallel_weight), max_norm
        self.name = f"projected({inner.name})"
        self.needs_labels = inner.needs_labels
        self.num_classes = inner.num_classes

    def check(self, *, model, schedule, shape, sampler: str) -> None:
        self.inner.check(model=model, schedule=schedule, shape=shape, sampler=sampler)

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        guided = self.inner(step)
        if guided.mean_shift is not None:
            raise ValueError(f"{self.name}: the inner method shifts the mean; wrap an eps-form method")
        eps = self.inner.unguided(step).eps
        x0 = step.predict_x0(eps)
        update = step.predict_x0(guided.eps) - x0
        if self.max_norm is not None:
            norm = _dot(update, update).sqrt()
            update = update * torch.clamp(self.max_norm / norm, max=1.0)
        parallel = _dot(update, x0) / _dot(x0, x0).clamp(min=1e-12) * x0
        update = self.parallel_weight * parallel + (update - parallel)
        sigma = step.sigma()
        guided.eps = eps - (1 - sigma**2).sqrt() / sigma * update
        return guided

    def unguided(self, step: GuidanceStep) -> GuidedPrediction:
        return self.inner.unguided(step)

    def describe(self) -> dict:
        return {"method": "projected", "parallel_weight": self.parallel_weight, "max_norm": self.max_norm,
                "inner": self.inner.describe()}
