"""Time-dependent guidance scales: the sweep's scale w becomes w * f(t) along the trajectory.

Named shapes f of the original timestep t in [0, T), each averaging 1 over t so that w stays comparable
across shapes (after Wang et al. 2024, "Analysis of Classifier-Free Guidance Weight Schedulers",
arXiv:2404.13040, whose linear and cosine schedules raise guidance as noise falls):

    constant : f(t) = 1
    linear   : f(t) = 2 (1 - t / T)             0 at the noisiest step, 2 at t = 0
    cosine   : f(t) = 1 + cos(pi t / T)         the same ends, flatter near both of them

A guidance interval (Kynkaanniemi et al. 2024) is the separate `GuidanceInterval` wrapper; both compose.
A row whose scale is 0 stays 0 at every step, so it never runs the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["SCALE_SCHEDULES", "scheduled_scale"]

SCALE_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda u: 1.0,
    "linear": lambda u: 2.0 * (1.0 - u),
    "cosine": lambda u: 1.0 + math.cos(math.pi * u),
}


def scheduled_scale(scales: torch.Tensor, name: str, T: int) -> Callable[[int], torch.Tensor] | torch.Tensor:
    """Per-sample scales [B] shaped by the named schedule: a function of the original timestep for
    `sample(scale=...)`, or `scales` itself for "constant"."""
    if name not in SCALE_SCHEDULES:
        raise ValueError(f"unknown scale schedule {name!r}; choose one of {sorted(SCALE_SCHEDULES)}")
    if name == "constant":
        return scales
    shape = SCALE_SCHEDULES[name]
    return lambda timestep: scales * shape(timestep / T)
