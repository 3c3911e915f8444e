"""CG++ (after CFG++, Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for
Diffusion Models"): the DDIM step forms x0_hat from the guided prediction but re-noises it with the
UNGUIDED eps, so guidance moves the clean estimate without pushing x_t off the noisy manifold.

    x_{i-1} = sqrt(abar_prev) * x0_hat(eps~) + sqrt(1 - abar_prev) * eps      (eta = 0)

Wraps any method (classifier guidance gives CG++, classifier-free guidance gives CFG++).
"""

from __future__ import annotations

from .base import Guidance, GuidanceStep, GuidedPrediction

__all__ = ["ManifoldConstrained"]


class ManifoldConstrained(Guidance):
    """x0_hat from inner's guided eps, direction from inner's unguided eps; DDIM only."""

    def __init__(self, inner: Guidance):
        self.inner = inner
        self.name = f"{inner.name}++"
        self.needs_labels = inner.needs_labels
        self.num_classes = inner.num_classes

    def check(self, *, model, schedule, shape, sampler: str) -> None:
        if sampler != "ddim":
            raise ValueError(f"{self.name} re-noises x0_hat in a DDIM step; use sampler=ddim (got {sampler!r})")
        self.inner.check(model=model, schedule=schedule, shape=shape, sampler=sampler)

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        guided = self.inner(step)
        if guided.mean_shift is not None:
            raise ValueError(f"{self.name}: the inner method shifts the mean; wrap an eps-form method")
        plain = self.inner.unguided(step)  # cached by the step for the methods that already ran the model
        guided.renoise_eps = plain.eps
        return guided

    def unguided(self, step: GuidanceStep) -> GuidedPrediction:
        return self.inner.unguided(step)

    def describe(self) -> dict:
        return {"method": "cgpp", "inner": self.inner.describe()}
