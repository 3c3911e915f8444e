"""LightningModules: the DDPM, the noisy (guidance) classifier and the clean evaluation classifier."""

from .cfg_ddpm import ConditionalDDPMModule
from .checkpoint import CheckpointError, check_compatible, load_module, read_checkpoint
from .classifier import ClassifierModule, EvalClassifierModule, NoisyClassifierModule
from .ddpm import DDPMModule

__all__ = [
    "DDPMModule",
    "ConditionalDDPMModule",
    "ClassifierModule",
    "NoisyClassifierModule",
    "EvalClassifierModule",
    "load_module",
    "read_checkpoint",
    "check_compatible",
    "CheckpointError",
]
