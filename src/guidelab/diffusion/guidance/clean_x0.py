"""x0-space guidance with a CLEAN classifier (after Ma et al. 2023, "Elucidating the Design Space of
Classifier-Guided Diffusion Generation", and DPS, Chung et al. 2023, "Diffusion Posterior Sampling for
General Noisy Inverse Problems"): an ordinary classifier trained on clean images scores the denoised
estimate x0_hat(x_t) = (x_t - sqrt(1 - abar) * eps(x_t)) / sqrt(abar), and

    eps~ = eps - w * sqrt(1 - abar) * grad_{x_t} log p(y | x0_hat(x_t)).

through_model=True backpropagates through the eps-model (DPS; one more model forward with grad and a
backward); through_model=False holds x0_hat's eps fixed, so grad_{x_t} = grad_{x0} / sqrt(abar)
(Ma et al.'s cheap variant). Never guide with the classifier that scores the samples: the sweep
refuses the evaluation classifier's own weights as the guide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Guidance, GuidanceStep, GuidedPrediction, class_count
from .classifier import check_targets, guide_eps

__all__ = ["CleanClassifierGuidance"]


class CleanClassifierGuidance(Guidance):
    needs_labels = True

    def __init__(self, classifier, *, through_model: bool = False, num_classes: int | None = None):
        self.classifier = classifier
        self.through_model = bool(through_model)
        self.num_classes = class_count(classifier, num_classes)
        self.name = "clean_x0_dps" if self.through_model else "clean_x0"

    def __call__(self, step: GuidanceStep) -> GuidedPrediction:
        clean = torch.zeros_like(step.timestep)
        with torch.enable_grad():
            x_in = step.x.detach().float().requires_grad_(True)
            if self.through_model:
                eps = step.model(x_in, step.timestep).float()
                step._model_eps = eps.detach().to(step.x.dtype)
            else:
                eps = step.model_eps().float()
            x0 = step.schedule.predict_x0(x_in, step.index_tensor(), eps)
            logits = self.classifier(x0, clean).float()
            check_targets(step.y, logits.shape[-1] if self.num_classes is None else self.num_classes)
            log_prob = F.log_softmax(logits, dim=-1).gather(1, step.y[:, None]).squeeze(1)
            (grad,) = torch.autograd.grad(log_prob.sum(), x_in)
        grad = grad.to(step.x.dtype)
        plain = step.model_eps()
        nfe = 4.0 if self.through_model else 3.0  # model fwd (+ its bwd) + classifier fwd + bwd
        return GuidedPrediction(eps=guide_eps(plain, grad, step.scale, step.sigma()), grad=grad,
                                log_prob=log_prob.detach(), nfe=nfe)

    def describe(self) -> dict:
        return {"method": self.name, "through_model": self.through_model}
