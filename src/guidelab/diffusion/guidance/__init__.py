"""Guidance methods as plug-in objects for `sample(..., guidance=...)`; see base.py for the interface.

| class | method | paper |
|---|---|---|
| ClassifierGuidance(form="eps"/"mean") | classifier guidance | Dhariwal & Nichol 2021 |
| ClassifierFreeGuidance | classifier-free guidance | Ho & Salimans 2021 |
| GuidanceInterval(inner) | guide only inside a timestep interval | Kynkaanniemi et al. 2024 |
| ManifoldConstrained(inner) | CG++ / CFG++: re-noise x0_hat with the unguided eps (DDIM) | after Chung et al. 2024 |
| ProjectedGuidance(inner) | x0-space update projected on x0_hat, norm bounded | after Sadat et al. 2024 (APG) |
| CleanClassifierGuidance | clean classifier on x0_hat(x_t) | after Ma et al. 2023, Chung et al. 2023 (DPS) |
| Autoguidance | guide away from a weaker DDPM | Karras et al. 2024 |
| Composite(parts) | several methods added | |
"""

from .autoguidance import Autoguidance
from .base import Guidance, GuidanceStep, GuidedPrediction, Unguided, class_count
from .cfg import ClassifierFreeGuidance, cfg_combine
from .cgpp import ManifoldConstrained
from .classifier import ClassifierGuidance, classifier_grad, guide_eps
from .clean_x0 import CleanClassifierGuidance
from .composite import Composite
from .interval import GuidanceInterval
from .projected import ProjectedGuidance
from .scales import Scale, guidance_interval, per_sample, scale_schedule

__all__ = [
    "Guidance",
    "GuidanceStep",
    "GuidedPrediction",
    "Unguided",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "GuidanceInterval",
    "ManifoldConstrained",
    "ProjectedGuidance",
    "CleanClassifierGuidance",
    "Autoguidance",
    "Composite",
    "class_count",
    "classifier_grad",
    "guide_eps",
    "cfg_combine",
    "Scale",
    "scale_schedule",
    "guidance_interval",
    "per_sample",
]
