"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself"): the
DDPM is guided away from a weaker version of itself (an earlier checkpoint or a smaller net trained
on the same schedule), which errs in the same directions but more.

    eps~ = eps + w * (eps - eps_weak)

Our w is the paper's w - 1, so that w = 0 is the unguided sampler here as for every other method.
Unconditional: needs no labels and no classifier.
"""

from __future__ import annotations

from .base import Guidance, GuidanceStep, GuidedPrediction
from .scales import per_sample

__all__ = ["Autoguidance", "check_same_schedule"]


def check_same_schedule(model, other, what: str) -> None:
    """Refuse `other` when both nets carry a NoiseSchedule (as DDPM modules do) and they differ."""
    mine, theirs = getattr(model, "schedule", None), getattr(other, "schedule", None)
    if mine is None or theirs is None or not hasattr(mine, "to_config") or not hasattr(theirs, "to_config"):
        return
    if mine.to_config() != theirs.to_config():
        raise ValueError(f"{what}: its schedule {theirs.to_config()} differs from the eps-model's "
                         f"{mine.to_config()}; train it on the same schedule")


class Autoguidance(Guidance):
    name = "autoguidance"

    def __init__(self, weak_model):
        self.weak_model = weak_model

    def check(self, *, model, schedule, shape, sampler: str) -> None:
        check_same_schedule(model, self.weak_model, "autoguidance's weak model")
        mine = getattr(getattr(model, "hparams", None), "image_shape", None)
        theirs = getattr(getattr(self.weak_model, "hparams", None), "image_shape", None)
        if mine is not None and theirs is not None and list(mine) != list(theirs):
            raise ValueError(f"autoguidance's weak model makes images of shape {list(theirs)}, "
                             f"the eps-model {list(mine)}")

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        eps = step.model_eps()
        weak = self.weak_model(step.x, step.timestep)
        return GuidedPrediction(eps=eps + per_sample(step.scale, eps) * (eps - weak), nfe=2.0)
