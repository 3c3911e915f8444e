"""Lightning callbacks."""

from .ema import FusedEMA
from .guided_sampling import GuidedSamplingCallback
from .progress import RichProgressBarEveryN

__all__ = ["FusedEMA", "GuidedSamplingCallback", "RichProgressBarEveryN"]
