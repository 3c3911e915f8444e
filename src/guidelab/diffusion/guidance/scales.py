"""Guidance scales: a float, a per-sample tensor [B], or a function of the original timestep returning either."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["Scale", "ScaleSchedule", "scale_schedule", "guidance_interval", "per_sample", "to_device"]

Scale = float | torch.Tensor | Callable[[int], "float | torch.Tensor"]


class ScaleSchedule:
    """Per-sample scales [B] (float32) at each original timestep, on the device for the math and on the host.

    The host copy is what decides which rows a method guides (`GuidanceStep.guided_index`): deciding on the
    device copy would read the device, a sync per sampling step on CUDA that leaves the GPU idle while the
    host catches up. Scales given as floats or host tensors never read the device; a CUDA tensor is read
    once (and once per step when a callable returns CUDA tensors)."""

    def __init__(self, scale: Scale, batch: int, device):
        self.batch, self.device = batch, torch.device(device)
        self._callable = scale if callable(scale) else None
        self._fixed = None if callable(scale) else self._both(scale)

    def at(self, timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scales on the device, the same scales on the host) at this original timestep."""
        return self._fixed if self._fixed is not None else self._both(self._callable(timestep))

    def __call__(self, timestep: int) -> torch.Tensor:
        """The scales on the device at this original timestep."""
        return self.at(timestep)[0]

    def _both(self, scale) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(scale, torch.Tensor):
            if scale.dim() == 0:
                scale = scale.expand(self.batch)
            elif scale.shape != (self.batch,):
                raise ValueError(f"scale must be a float or a tensor of shape [{self.batch}], got shape {tuple(scale.shape)}")
            host = scale.detach().to(device="cpu", dtype=torch.float32)
            device = scale.to(dtype=torch.float32) if scale.device == self.device else None
        elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
            if not math.isfinite(scale):
                raise ValueError(f"scale must be finite, got {scale}")
            host = torch.full((self.batch,), float(scale))
            device = torch.full((self.batch,), float(scale), device=self.device)
        else:
            raise TypeError(f"scale must be a float, a tensor [B] or a callable of t, got {type(scale).__name__}")
        if not all(math.isfinite(w) for w in host.tolist()):  # tolist: no tensor op per value
            raise ValueError("scale must be finite (got NaN or inf)")
        return (to_device(host, self.device) if device is None else device), host


def scale_schedule(scale: Scale, batch: int, device) -> ScaleSchedule:
    """Normalise a guidance scale to a ScaleSchedule: original timestep -> per-sample scales [B] (float32).

    `scale` is a float (one scale for all), a tensor [B] (one per sample, so one batch sweeps
    many scales), or a callable of the original timestep returning either (time-dependent).
    """
    return ScaleSchedule(scale, batch, device)


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting for the device: through pinned memory and an
    asynchronous copy on CUDA (a copy from pageable memory may wait for the stream)."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


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
