"""The math of guided diffusion, in plain torch: schedules, samplers, guidance methods."""

from . import guidance
from .guidance import *  # noqa: F403  (the Guidance interface and every method; listed in guidance.__all__)
from .samplers import SAMPLERS, check_sampler, check_sampling, ddim_step, ddpm_step, resolve_guidance, sample
from .schedule import NoiseSchedule, spaced_timesteps

__all__ = ["NoiseSchedule", "spaced_timesteps", "sample", "check_sampler", "check_sampling", "ddpm_step", "ddim_step",
           "SAMPLERS", "resolve_guidance",
           *guidance.__all__]
