"""What one guided sweep across scales produces; written to quality_diversity.json and logged to W&B."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

METRICS = ("fid", "accuracy", "precision", "recall")


@dataclass
class SweepResult:
    # one dict per guidance scale, ascending: scale, fid, accuracy, precision, recall, samples_per_s, num_samples
    rows: list[dict]
    # sampler settings: sampler, steps, eta, form, clip_denoised, samples_per_scale, seed, features, ...
    settings: dict
    # wall-clock seconds: sampling_s, metrics_s, total_s, and overall samples_per_s
    timings: dict
    # scale -> a few generated images [n, C, H, W] in [-1, 1]; targets cycle through the classes
    grids: dict[float, torch.Tensor] = field(default_factory=dict)
    # where guidance acts, per sampling step (noisiest first): {"t": [T-1 ... 0] original timesteps,
    #  "scales": [...], "grad_norm": [[per step] per scale], "p_target": [[per step] per scale]}
    trajectory: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The quality_diversity.json document: rows, settings, timings and the trajectory diagnostics."""
        return {"rows": self.rows, "settings": self.settings, "timings": self.timings, "trajectory": self.trajectory}
