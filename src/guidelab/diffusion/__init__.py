"""The math of guided diffusion, in plain torch: schedules, samplers, guidance methods."""

from .guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    Guidance,
    GuidanceStep,
    GuidedPrediction,
    Unguided,
    cfg_combine,
    classifier_grad,
    guidance_interval,
    guide_eps,
    scale_schedule,
)
from .samplers import SAMPLERS, ddim_step, ddpm_step, resolve_guidance, sample
from .schedule import NoiseSchedule, spaced_timesteps

__all__ = [
    "NoiseSchedule",
    "spaced_timesteps",
    "sample",
    "ddpm_step",
    "ddim_step",
    "SAMPLERS",
    "resolve_guidance",
    "Guidance",
    "GuidanceStep",
    "GuidedPrediction",
    "Unguided",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "classifier_grad",
    "guide_eps",
    "cfg_combine",
    "scale_schedule",
    "guidance_interval",
]
