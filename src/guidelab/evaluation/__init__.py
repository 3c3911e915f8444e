"""The guided sweep across scales (shared by the callback and guidelab-sweep), its report and plots."""

from .guided_sweep import run_guided_sweep
from .sweep_settings import SweepSettings
from .result import METRICS, SweepResult

__all__ = ["SweepSettings", "run_guided_sweep", "SweepResult", "METRICS"]
