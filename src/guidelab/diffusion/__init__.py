"""The math of guided diffusion, in plain torch: schedules, samplers, guidance rules."""

from .guidance import cfg_combine, classifier_grad, guidance_interval, guide_eps, scale_schedule
from .samplers import SAMPLERS, ddim_step, ddpm_step, sample
from .schedule import NoiseSchedule, spaced_timesteps

__all__ = [
    "NoiseSchedule",
    "spaced_timesteps",
    "sample",
    "ddpm_step",
    "ddim_step",
    "SAMPLERS",
    "classifier_grad",
    "guide_eps",
    "cfg_combine",
    "scale_schedule",
    "guidance_interval",
]
