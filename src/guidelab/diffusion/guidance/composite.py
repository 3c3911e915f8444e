"""Several methods at once: each adds its own change to the shared unguided prediction,

    eps~ = eps + sum_k (eps~_k - eps),   mean shifts add,

with method k seeing scale weight_k * w. This is how Karras et al. 2024 combine autoguidance with
other guidance (their Sec. 5); e.g. autoguidance + classifier guidance.
"""

from __future__ import annotations

from .base import Guidance, GuidanceStep, GuidedPrediction

__all__ = ["Composite"]


class Composite(Guidance):
    def __init__(self, parts: list[Guidance], weights: list[float] | None = None):
        if not parts:
            raise ValueError("a composite guidance needs at least one method")
        weights = [1.0] * len(parts) if weights is None else [float(w) for w in weights]
        if len(weights) != len(parts):
            raise ValueError(f"{len(parts)} methods but {len(weights)} weights")
        self.parts, self.weights = list(parts), weights
        self.name = "+".join(part.name for part in parts)
        self.needs_labels = any(part.needs_labels for part in parts)
        counts = {part.num_classes for part in parts if part.num_classes is not None}
        if len(counts) > 1:
            raise ValueError(f"combined methods disagree on the class count: {sorted(counts)}")
        self.num_classes = counts.pop() if counts else None

    def check(self, *, model, schedule, shape, sampler: str) -> None:
        for part in self.parts:
            part.check(model=model, schedule=schedule, shape=shape, sampler=sampler)

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        eps = step.model_eps()
        total = GuidedPrediction(eps=eps, nfe=1.0)
        for part, weight in zip(self.parts, self.weights):
            out = part(step.with_scale_factor(weight))
            total.eps = total.eps + (out.eps - eps)
            if out.mean_shift is not None:
                total.mean_shift = out.mean_shift if total.mean_shift is None else total.mean_shift + out.mean_shift
            if out.renoise_eps is not None:
                raise ValueError(f"{part.name} re-noises with its own eps and cannot be combined; wrap the sum instead")
            if out.grad is not None:
                total.grad, total.log_prob = out.grad, out.log_prob
            total.nfe += out.nfe - 1.0  # the model's own prediction is shared
        return total

    def describe(self) -> dict:
        return {"method": "composite", "weights": self.weights, "parts": [part.describe() for part in self.parts]}
