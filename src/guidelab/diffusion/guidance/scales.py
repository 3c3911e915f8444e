"""Guidance scales: a float, a per-sample tensor [B], or a function of the original timestep returning either."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["Scale", "scale_schedule", "guidance_interval", "per_sample"]

Scale = float | torch.Tensor | Callable[[int], "float | torch.Tensor"]


def scale_schedule(scale: Scale, batch: int, device) -> Callable[[int], torch.Tensor]:
    """Normalise a guidance scale to a function: original timestep -> per-sample scales [B] (float32).

    `scale` is a float (one scale for all), a tensor [B] (one per sample, so one batch sweeps
    many scales), or a callable of the original timestep returning either (time-dependent).
    """
    if callable(scale):
        return lambda timestep: _as_batch(scale(timestep), batch, device)
    fixed = _as_batch(scale, batch, device)
    return lambda timestep: fixed


def guidance_interval(scale: float | torch.Tensor, t_min: int, t_max: int) -> Callable[[int], float | torch.Tensor]:
    """A scale that guides only while t_min <= timestep <= t_max (original timesteps); 0 elsewhere.

    For a method whose zero-scale prediction is not the unguided one, wrap the method instead
    (`GuidanceInterval`)."""
    if t_min > t_max:
        raise ValueError(f"t_min={t_min} is above t_max={t_max}")
    return lambda timestep: scale if t_min <= timestep <= t_max else 0.0


def per_sample(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample scales [B] shaped [B, 1, ..., 1] in like's dtype, to broadcast against `like`."""
    return w.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _as_batch(scale, batch: int, device) -> torch.Tensor:
    if isinstance(scale, torch.Tensor):
        if scale.dim() == 0:
            scale = scale.expand(batch)
        elif scale.shape != (batch,):
            raise ValueError(f"scale must be a float or a tensor of shape [{batch}], got shape {tuple(scale.shape)}")
        w = scale.to(device=device, dtype=torch.float32)
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
        w = torch.full((batch,), float(scale), device=device)
    else:
        raise TypeError(f"scale must be a float, a tensor [B] or a callable of t, got {type(scale).__name__}")
    if not torch.isfinite(w).all():
        raise ValueError("scale must be finite (got NaN or inf)")
    return w
