"""guidelab: classifier-guided diffusion experiments (Dhariwal & Nichol 2021). Train an unconditional DDPM once,
train noise-aware classifiers, guide with any of them and read quality-diversity curves across guidance scales.

Layers, bottom to top: `diffusion` (pure torch math), `nets`, `data`, `metrics`, `modules` (Lightning),
`evaluation`, `callbacks`, `apps` (the Hydra entry points); see docs/ARCHITECTURE.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("guidelab")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"
