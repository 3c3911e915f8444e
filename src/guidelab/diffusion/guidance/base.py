"""The guidance interface: what the sampling loop hands a guidance object each step, and what it gets back.

In the spirit of guided-diffusion's `cond_fn` (Dhariwal & Nichol 2021), k-diffusion's model wrappers
and diffusers' guiders: the loop in `samplers.py` knows no method by name. Each step it builds a
`GuidanceStep` and calls `guidance(step)`; the object returns a `GuidedPrediction` (the eps the
sampler steps with, optionally a mean shift or a re-noising eps) and its diagnostics.

A new method is a subclass of `Guidance` overriding `__call__` (and `check` for what it cannot do).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..schedule import NoiseSchedule
from .scales import to_device

__all__ = ["Guidance", "GuidanceStep", "GuidedPrediction", "Unguided", "class_count"]


@dataclass
class GuidanceStep:
    """What one sampling step knows. `index` is the position in the (possibly respaced) `schedule`,
    `timestep` the ORIGINAL timesteps [B] the networks are conditioned on, `scale` the per-sample
    guidance scales [B] (float32) at this step, `y` the target classes [B] (None when unguided).

    `scale_host` (the same scales on the CPU) and `timestep_value` (the original timestep as an int, the
    same for every row) let a method decide on the host what the device computes: `sample()` fills both,
    so its loop never reads the device (on CUDA each read is a sync that idles the GPU). Left None by a
    hand-made step, they are read from `scale` and `timestep` instead."""

    model: object
    schedule: NoiseSchedule
    x: torch.Tensor
    index: int
    timestep: torch.Tensor
    scale: torch.Tensor
    y: torch.Tensor | None = None
    scale_host: torch.Tensor | None = None
    timestep_value: int | None = None
    _model_eps: torch.Tensor | None = field(default=None, repr=False)

    def model_eps(self) -> torch.Tensor:
        """The eps-model's own prediction model(x_t, timestep), computed once per step and shared."""
        if self._model_eps is None:
            self._model_eps = self.model(self.x, self.timestep)
        return self._model_eps

    def sigma(self) -> torch.Tensor:
        """sqrt(1 - abar) at this step, shaped to broadcast against x: the factor between eps and the score."""
        return self.schedule.sigma(self.index_tensor(), self.x)

    def index_tensor(self) -> torch.Tensor:
        """The schedule index as a LongTensor [B] (what NoiseSchedule's methods take)."""
        return torch.full_like(self.timestep, self.index)

    def predict_x0(self, eps: torch.Tensor) -> torch.Tensor:
        return self.schedule.predict_x0(self.x, self.index_tensor(), eps)

    def guided_rows(self) -> torch.Tensor:
        """Bool [B]: the rows with a non-zero scale at this step. Methods may skip their extra network
        for the other rows (their prediction there is the unguided one); see ClassifierGuidance."""
        return self.scale != 0

    def guided_index(self) -> torch.Tensor | None:
        """The rows with a non-zero scale as indices [K] on x's device (K = 0: none), or None when every
        row is guided; decided on `scale_host`, so without reading the device when the loop provides it."""
        host = self.scale_host if self.scale_host is not None else self.scale.detach().cpu()
        rows = [row for row, w in enumerate(host.tolist()) if w != 0]
        if len(rows) == len(host):
            return None
        return to_device(torch.tensor(rows, dtype=torch.long), self.x.device)

    def original_timestep(self) -> int:
        """The original timestep of this step as an int (every row shares it)."""
        return self.timestep_value if self.timestep_value is not None else int(self.timestep[0])

    def with_scale_factor(self, factor: float) -> "GuidanceStep":
        """This step with every scale multiplied by `factor` (host copy included); the cached model eps is shared."""
        host = None if self.scale_host is None else self.scale_host * factor
        return replace(self, scale=self.scale * factor, scale_host=host)


@dataclass
class GuidedPrediction:
    """The guided prediction of one step and its diagnostics.

    eps: the eps the sampler forms x0_hat from (and steps with).
    mean_shift: g with mu~ = mu + Sigma * g (guided-diffusion's mean form; ancestral sampler only).
    renoise_eps: the eps DDIM re-noises x0_hat with, when it differs from `eps` (CG++; DDIM only).
    grad: the guidance gradient [B, ...] when there is one; log_prob: the guide's log p(y | .) [B].
    nfe: network evaluations per sample this step (forward passes, a backward pass counting as one)."""

    eps: torch.Tensor
    mean_shift: torch.Tensor | None = None
    renoise_eps: torch.Tensor | None = None
    grad: torch.Tensor | None = None
    log_prob: torch.Tensor | None = None
    nfe: float = 1.0


class Guidance:
    """A guidance rule handed to `sample(..., guidance=...)`. This base class is the unguided sampler.

    name: how configs and reports call the method.
    num_classes: the class count targets must lie under (None: unconditional, or unknown until the
    first classifier output). needs_labels: whether `sample` must be given targets y.
    """

    name = "none"
    needs_labels = False
    num_classes: int | None = None

    def check(self, *, model, schedule: NoiseSchedule, shape, sampler: str) -> None:
        """Raise ValueError before sampling if this method cannot run with these nets / this sampler."""

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        return self.unguided(step)

    def unguided(self, step: GuidanceStep) -> GuidedPrediction:
        """The prediction with guidance off (what scale 0 must reproduce)."""
        return GuidedPrediction(eps=step.model_eps(), nfe=1.0)

    def describe(self) -> dict:
        """Plain-dict settings for reports."""
        return {"method": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class Unguided(Guidance):
    """The plain sampler: eps = model(x_t, t)."""


def class_count(net, given: int | None = None) -> int | None:
    """A net's class count without running it: `given`, else its `num_classes` attribute (also on a
    Lightning module's hparams or a bound method's owner), else None."""
    if given is not None:
        return int(given)
    for owner in (net, getattr(net, "hparams", None), getattr(net, "__self__", None)):
        n = getattr(owner, "num_classes", None) if owner is not None else None
        if n is not None:
            return int(n)
    return None
