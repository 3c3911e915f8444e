"""Guidance interval (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample
and Distribution Quality in Diffusion Models"): any method guides only for noise levels inside an
interval of timesteps and samples unguided elsewhere."""

from __future__ import annotations

from .base import Guidance, GuidanceStep, GuidedPrediction

__all__ = ["GuidanceInterval"]


class GuidanceInterval(Guidance):
    """`inner` while t_min <= timestep <= t_max (original timesteps, inclusive); inner.unguided elsewhere."""

    def __init__(self, inner: Guidance, t_min: int, t_max: int):
        if not 0 <= t_min <= t_max:
            raise ValueError(f"guidance interval needs 0 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
        self.inner, self.t_min, self.t_max = inner, int(t_min), int(t_max)
        self.name = f"interval({inner.name})"
        self.needs_labels = inner.needs_labels
        self.num_classes = inner.num_classes

    def check(self, *, model, schedule, shape, sampler: str) -> None:
        if self.t_min >= schedule.T:
            raise ValueError(f"guidance interval t_min={self.t_min} lies beyond the schedule's T={schedule.T}")
        self.inner.check(model=model, schedule=schedule, shape=shape, sampler=sampler)

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        if self.t_min <= step.original_timestep() <= self.t_max:
            return self.inner(step)
        return self.inner.unguided(step)

    def unguided(self, step: GuidanceStep) -> GuidedPrediction:
        return self.inner.unguided(step)

    def describe(self) -> dict:
        return {"method": "interval", "t_min": self.t_min, "t_max": self.t_max, "inner": self.inner.describe()}
