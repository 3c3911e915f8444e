"""Classifier-free guidance (Ho & Salimans 2021, "Classifier-Free Diffusion Guidance").

    eps~ = eps(x_t | null) + w * (eps(x_t | y) - eps(x_t | null))

The eps-model is class-conditional, model(x_t, t, y), with y = null_class meaning unconditional.
"""

from __future__ import annotations

import torch

from .base import Guidance, GuidanceStep, GuidedPrediction, class_count
from .scales import per_sample

__all__ = ["ClassifierFreeGuidance", "cfg_combine"]


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return eps_uncond + per_sample(w, eps_cond) * (eps_cond - eps_uncond)


class ClassifierFreeGuidance(Guidance):
    """Both conditional passes in one batched forward of the class-conditional eps-model."""

    name = "cfg"
    needs_labels = True

    def __init__(self, null_class: int, num_classes: int | None = None):
        if null_class is None:
            raise ValueError("guidance='cfg' needs null_class, the label index the model treats as unconditional")
        self.null_class = int(null_class)
        self.num_classes = int(num_classes) if num_classes is not None else self.null_class

    def check(self, *, model, schedule, shape, sampler: str) -> None:
        n = class_count(model)
        if n is not None and n != self.num_classes:
            raise ValueError(f"classifier-free guidance: the eps-model has num_classes={n}, the guidance "
                             f"expects {self.num_classes}; build it with the model's class count")

    def unguided(self, step: GuidanceStep) -> GuidedPrediction:
        """eps(x_t | null), computed once per step (and kept from __call__'s batched pass)."""
        if step._model_eps is None:
            step._model_eps = step.model(step.x, step.timestep, torch.full_like(step.y, self.null_class))
        return GuidedPrediction(eps=step._model_eps)

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        x, t, y = step.x, step.timestep, step.y
        eps = step.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, self.null_class)]))
        eps_cond, eps_uncond = eps.chunk(2)
        step._model_eps = eps_uncond  # the unconditional prediction, for wrappers asking for unguided()
        return GuidedPrediction(eps=cfg_combine(eps_uncond, eps_cond, step.scale), nfe=2.0)

    def describe(self) -> dict:
        return {"method": self.name, "null_class": self.null_class}
