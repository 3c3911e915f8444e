"""Guidance rules: how a classifier (or a conditional model) bends the unconditional prediction.

    classifier guidance, eps form  : eps~ = eps - w * sqrt(1 - abar_t) * grad_x log p(y | x_t)
    classifier guidance, mean form : mu~  = mu + w * Sigma_t * grad_x log p(y | x_t)     (guided-diffusion)
    classifier-free guidance       : eps~ = eps(x_t | null) + w * (eps(x_t | y) - eps(x_t | null))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "classifier_grad",
    "guide_eps",
    "cfg_combine",
    "scale_schedule",
    "guidance_interval",
]

Scale = float | torch.Tensor | Callable[[int], "float | torch.Tensor"]


def classifier_grad(classifier, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
    """grad_x log p(y | x_t) and log p(y | x_t), in float32 with autograd on x_t alone."""
    with torch.enable_grad():
        x_in = x.detach().float().requires_grad_(True)
        log_probs = F.log_softmax(classifier(x_in, t).float(), dim=-1)
        selected = log_probs.gather(1, y[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(selected.sum(), x_in)
    return grad.to(x.dtype), selected.detach()


def guide_eps(eps: torch.Tensor, grad: torch.Tensor, w: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The textbook rule; `w` is [B], `sigma` = sqrt(1 - abar_t) broadcastable to eps."""
    return eps - _per_sample(w, eps) * sigma * grad


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return eps_uncond + _per_sample(w, eps_cond) * (eps_cond - eps_uncond)


def scale_schedule(scale: Scale, batch: int, device) -> Callable[[int], torch.Tensor]:
    """Normalise a guidance scale to a function: original timestep -> per-sample scales [B].

    `scale` is a float (one scale for all), a tensor [B] (one per sample, so one batch sweeps
    many scales), or a callable of the original timestep returning either (time-dependent).
    """
    if callable(scale):
        return lambda t: _as_batch(scale(t), batch, device)
    fixed = _as_batch(scale, batch, device)
    return lambda t: fixed


def guidance_interval(scale: float | torch.Tensor, t_min: int, t_max: int) -> Callable[[int], float | torch.Tensor]:
    """Guide only while t_min <= t <= t_max (original timesteps); unguided elsewhere."""
    if t_min > t_max:
        raise ValueError(f"t_min={t_min} is above t_max={t_max}")
    return lambda t: scale if t_min <= t <= t_max else 0.0


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


def _per_sample(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return w.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
