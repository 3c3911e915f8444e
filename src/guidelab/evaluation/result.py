"""What one guided sweep produces; written to quality_diversity.json and logged to W&B."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import torch

METRICS = ("fid", "accuracy", "precision", "recall")


@dataclass
class SweepResult:
    # one dict per (method, guidance scale), methods in sweep order, scales ascending: method, scale, fid,
    # accuracy, precision, recall, nfe_per_sample (network evaluations: forward passes, a backward pass
    # counting as one), s_per_sample (sampling seconds per sample on one rank), samples_per_s, num_samples
    rows: list[dict]
    # sampler settings: sampler, steps, eta, clip_denoised, samples_per_scale, seed, features, ..., and
    # "methods": method -> {its guidance settings, sampler/steps/eta, sampling_s, nfe_per_sample, s_per_sample}
    settings: dict
    # wall-clock seconds over all methods: sampling_s, metrics_s, total_s, and overall samples_per_s
    timings: dict
    # method -> scale -> a few generated images [n, C, H, W] in [-1, 1]; targets cycle through the classes
    grids: dict[str, dict[float, torch.Tensor]] = field(default_factory=dict)
    # method -> where guidance acts, per sampling step (noisiest first): {"t": original timesteps,
    #  "scales": [...], "grad_norm": [[per step] per scale], "p_target": [[per step] per scale]}
    trajectory: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The quality_diversity.json document: rows, settings, timings and the trajectory diagnostics."""
        return {"rows": self.rows, "settings": self.settings, "timings": self.timings, "trajectory": self.trajectory}


def software_versions(device: torch.device | None = None) -> dict:
    """What produced a result, recorded in its JSON: guidelab, torch (and its CUDA), Lightning, Python, the device."""
    import platform

    import guidelab

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    versions = {"guidelab": guidelab.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
                "pytorch_lightning": installed("pytorch-lightning"), "python": platform.python_version()}
    if device is not None and torch.device(device).type == "cuda":
        versions["device"] = torch.cuda.get_device_name(device)
    elif device is not None:
        versions["device"] = platform.processor() or platform.machine()
    return versions
