"""Guidance methods as plug-in objects for `sample(..., guidance=...)`; see base.py for the interface."""

from .base import Guidance, GuidanceStep, GuidedPrediction, Unguided, class_count
from .cfg import ClassifierFreeGuidance, cfg_combine
from .classifier import ClassifierGuidance, classifier_grad, guide_eps
from .scales import Scale, guidance_interval, per_sample, scale_schedule

__all__ = [
    "Guidance",
    "GuidanceStep",
    "GuidedPrediction",
    "Unguided",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "class_count",
    "classifier_grad",
    "guide_eps",
    "cfg_combine",
    "Scale",
    "scale_schedule",
    "guidance_interval",
    "per_sample",
]
