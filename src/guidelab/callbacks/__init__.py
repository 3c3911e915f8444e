"""Lightning callbacks."""

from .ema import FusedEMA
from .guided_sampling import GuidedSamplingCallback

__all__ = ["FusedEMA", "GuidedSamplingCallback"]
