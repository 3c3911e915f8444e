"""Lightning callbacks."""

from .guided_sampling import GuidedSamplingCallback

__all__ = ["GuidedSamplingCallback"]
