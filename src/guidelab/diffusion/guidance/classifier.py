"""Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis").

    eps form  : eps~ = eps - w * sqrt(1 - abar_t) * grad_x log p(y | x_t)     (the textbook rule, their eq. 14)
    mean form : mu~  = mu + w * Sigma_t * grad_x log p(y | x_t)                (their Algorithm 1, ancestral only)

Any noise-aware classifier `(x_t, t) -> logits` guides any eps-model `(x_t, t) -> eps`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Guidance, GuidanceStep, GuidedPrediction, class_count
from .scales import per_sample
from .streams import concurrently

__all__ = ["ClassifierGuidance", "classifier_grad", "guide_eps", "check_targets"]

FORMS = ("eps", "mean")


def classifier_grad(classifier, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, num_classes: int | None = None,
                    *, check: bool = True):
    """grad_x log p(y | x) and log p(y | x), in float32 with autograd on x alone.

    `num_classes` None: y is checked against the width of the logits instead (no extra forward pass).
    `check=False` skips the check of y: for a caller that has checked these targets."""
    with torch.enable_grad():
        x_in = x.detach().float().requires_grad_(True)
        logits = classifier(x_in, t).float()
        if check:
            check_targets(y, logits.shape[-1] if num_classes is None else num_classes)
        selected = F.log_softmax(logits, dim=-1).gather(1, y[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(selected.sum(), x_in)
    return grad.to(x.dtype), selected.detach()


_last_passed: tuple | None = None  # (targets tensor, its version counter, class count) of the last passing check


def check_targets(y: torch.Tensor, num_classes: int) -> None:
    """Raise unless every target lies in [0, num_classes).

    The check reads the device (a sync on CUDA), and a sampling loop hands the same targets to every step:
    so the last passing check is remembered, and the same tensor, unmodified (its version counter), against
    the same class count is not read again."""
    global _last_passed
    key = (_version(y), num_classes)
    if _last_passed is not None and _last_passed[0] is y and _last_passed[1:] == key and key[0] is not None:
        return
    if (y < 0).any() or (y >= num_classes).any():
        raise ValueError(f"y must lie in [0, num_classes={num_classes}), got values {y.min().item()}..{y.max().item()}")
    _last_passed = (y, *key)


def _version(y: torch.Tensor) -> int | None:
    """y's in-place modification counter; None for inference-mode tensors, which keep none."""
    try:
        return y._version
    except RuntimeError:
        return None


def guide_eps(eps: torch.Tensor, grad: torch.Tensor, w: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The textbook rule; `w` is [B], `sigma` = sqrt(1 - abar_t) broadcastable to eps."""
    return eps - per_sample(w, eps) * sigma * grad


class ClassifierGuidance(Guidance):
    """Guide with the gradient of a noisy classifier's log p(y | x_t); `form` "eps" or "mean".

    `streams=True`: on CUDA the classifier's forward and backward run on a second stream while the eps-model
    runs on the current one (streams.py); the same values, possibly sooner. No effect elsewhere."""

    name = "classifier"
    needs_labels = True

    def __init__(self, classifier, *, form: str = "eps", num_classes: int | None = None, streams: bool = False):
        if form not in FORMS:
            raise ValueError(f"unknown guidance form {form!r}; choose one of {list(FORMS)}")
        if not isinstance(streams, bool):
            raise ValueError(f"streams must be true or false, got {streams!r}")
        self.classifier = classifier
        self.form = form
        self.streams = streams
        self.num_classes = class_count(classifier, num_classes)
        if form == "mean":
            self.name = "classifier_mean"

    def check(self, *, model, schedule, shape, sampler: str) -> None:
        if self.form == "mean" and sampler != "ddpm":
            raise ValueError("form='mean' is defined for the ancestral sampler only; use form='eps' with DDIM")

    def log_prob_grad(self, step: GuidanceStep):
        """grad_x log p(y | x_t) and log p(y | x_t), the classifier run on the guided rows only.

        Rows whose scale is 0 at this step (not in step.guided_index()) get no guidance, so the classifier's
        forward and backward skip them: their grad is 0 and their log_prob NaN (not evaluated). Which rows
        those are is decided on the host, and the targets are checked once per targets tensor: a step reads
        nothing back from the device (with the class count known; else the guided rows' targets are checked
        against the logits' width every step)."""
        if self.num_classes is not None:
            check_targets(step.y, self.num_classes)  # reads the device once per targets tensor
        index = step.guided_index() if isinstance(step, GuidanceStep) else None  # a bare (x, timestep, y): all rows
        if index is None:
            return classifier_grad(self.classifier, step.x, step.timestep, step.y, self.num_classes)
        grad = torch.zeros_like(step.x)
        log_prob = torch.full(step.y.shape, float("nan"), device=step.x.device)
        if len(index):
            grad[index], log_prob[index] = classifier_grad(self.classifier, step.x[index], step.timestep[index],
                                                           step.y[index], self.num_classes,
                                                           check=self.num_classes is None)
        return grad, log_prob

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        if self.streams:
            eps, (grad, log_prob) = concurrently(step.model_eps, lambda: self.log_prob_grad(step), step.x.device)
        else:
            eps = step.model_eps()
            grad, log_prob = self.log_prob_grad(step)
        if self.form == "mean":
            return GuidedPrediction(eps=eps, mean_shift=per_sample(step.scale, grad) * grad, grad=grad,
                                    log_prob=log_prob, nfe=3.0)
        return GuidedPrediction(eps=guide_eps(eps, grad, step.scale, step.sigma()), grad=grad, log_prob=log_prob,
                                nfe=3.0)

    def describe(self) -> dict:
        return {"method": self.name, "form": self.form, **({"streams": True} if self.streams else {})}
