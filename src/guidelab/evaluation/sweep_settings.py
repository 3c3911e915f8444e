"""How a sweep samples (`SweepSettings`): scales, sampler, steps, schedule, fast path; checked before any work.

Built from conf/sweep_settings/default.yaml, the one source of the defaults for guidelab-sweep and the callback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from omegaconf import OmegaConf

from guidelab.diffusion import Guidance, GuidanceInterval, NoiseSchedule, check_sampler, check_sampling
from guidelab.diffusion.scale_schedules import SCALE_SCHEDULES
from guidelab.metrics.features import FEATURE_KINDS, require_inception_weights

from .fast_nets import FastPath
from .guidance_methods import SweepMethod


class SweepSettingsError(ValueError):
    """A sweep or metric setting that cannot work, named by its key: raised before any work (by the training
    callback's setup, where the apps cannot wrap it) and reported by the apps as a one-line user error."""


@dataclass
class SweepSettings:
    """How a sweep samples. No defaults here: they live in conf/sweep_settings/default.yaml, the one
    source for guidelab-sweep and the callback (build with `SweepSettings.from_config`)."""

    scales: list[float]
    samples_per_scale: int
    batch_size: int
    sampler: str
    steps: int | None
    eta: float
    clip_denoised: bool
    seed: int
    grid_size: int
    scale_schedule: str  # constant | linear | cosine (diffusion/scale_schedules.py)
    interval: list[int] | None  # [t_lo, t_hi]: every method guides only inside (GuidanceInterval)
    fast_path: str  # auto | on | graphs | eager | off (fast_nets.py)

    @classmethod
    def from_config(cls, node) -> "SweepSettings":
        values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            raise ValueError(f"sweep settings: unknown keys {unknown}, missing keys {missing} "
                             "(compare conf/sweep_settings/default.yaml)")
        return cls(**values)

    def __post_init__(self):
        self.scales = sorted(float(s) for s in self.scales)
        if not self.scales:
            raise ValueError("scales must list at least one guidance scale")
        if any(not math.isfinite(s) for s in self.scales):
            raise ValueError(f"guidance scales must be finite, got {self.scales}")
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"guidance scales must be distinct, got {self.scales}")
        if self.samples_per_scale < 4:
            raise ValueError("samples_per_scale must be >= 4 (precision/recall with k=3 needs k+1 samples), "
                             f"got {self.samples_per_scale}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.grid_size < 0:
            raise ValueError(f"grid_size (samples per scale in the image grids, 0 for none) must be >= 0, got "
                             f"{self.grid_size}")
        FastPath.choose(self.fast_path, "cpu")  # refuses an unknown name
        check_sampler(self.sampler, self.eta)  # what needs no DDPM; check_methods does the rest once it loads
        if self.scale_schedule not in SCALE_SCHEDULES:
            raise ValueError(f"scale_schedule must be one of {sorted(SCALE_SCHEDULES)}, got {self.scale_schedule!r}")
        if self.interval is not None:
            self.interval = [int(v) for v in self.interval]
            if len(self.interval) != 2 or not 0 <= self.interval[0] <= self.interval[1]:
                raise ValueError(f"interval must be [t_lo, t_hi] with 0 <= t_lo <= t_hi, got {self.interval}")

    def check_methods(self, schedule: NoiseSchedule, image_shape,
                      methods: dict[str, SweepMethod] | None = None) -> None:
        """Every method must be able to sample with these settings and its own overrides on the DDPM's `schedule`
        (steps within T, the interval inside it, a sampler the method can take): all checked before any sampling,
        so a bad pairing in the last method does not fail after the first ones' work."""
        T = schedule.T
        for name, steps in [("guidance", self.steps)] + [
                (f"method.{m.name}", m.overrides["steps"]) for m in (methods or {}).values() if "steps" in m.overrides]:
            if steps is not None and not 1 <= steps <= T:
                raise ValueError(f"{name}.steps must be in [1, T={T}] of the DDPM, got {steps}")
        if self.interval is not None and self.interval[0] >= T:
            raise ValueError(f"guidance.interval={self.interval} starts beyond the DDPM's last timestep T-1={T - 1}")
        for method in (methods or {}).values():
            options = self.for_method(method)
            try:
                check_sampling(method.model, schedule, (self.batch_size, *image_shape),
                               guidance=self.guidance_for(method), **options)
            except ValueError as err:
                set_here = sorted(set(method.overrides) & {"sampler", "steps", "eta"})
                where = f" (set in method.{method.name}: {', '.join(set_here)})" if set_here else ""
                raise ValueError(f"method {method.name} with sampler={options['sampler']}, steps={options['steps']}, "
                                 f"eta={options['eta']}{where}: {err}") from err

    def guidance_for(self, method: SweepMethod) -> Guidance:
        """The guidance object a method samples with: its own, inside the shared guidance interval if one is set."""
        return method.guidance if self.interval is None else GuidanceInterval(method.guidance, *self.interval)

    def scale_schedule_label(self) -> str:
        """How w varies along the trajectory, e.g. 'constant' or 'cosine, t in [200, 800]'."""
        interval = "" if self.interval is None else f", t in [{self.interval[0]}, {self.interval[1]}]"
        return self.scale_schedule + interval

    def for_method(self, method: SweepMethod) -> dict:
        """sampler / steps / eta for one method: the shared values unless its node overrides them."""
        return {"sampler": self.sampler, "steps": self.steps, "eta": self.eta, **method.overrides}


def check_metric_settings(metrics, datamodule=None) -> None:
    """The metric settings (conf/sweep_metrics/default.yaml: features, inception_weights, num_real, real_split)
    against what they need, before any work: a known feature space, Inception weights on disk (never downloaded),
    and a real set the data's split can serve (counted on `datamodule` when given). Raises ValueError naming the key."""
    if metrics["features"] not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {list(FEATURE_KINDS)}, got {metrics['features']!r}")
    if metrics["features"] == "inception":
        try:
            require_inception_weights(metrics["inception_weights"])
        except FileNotFoundError as err:
            raise ValueError(f"features=inception: {err}") from err
    if metrics["real_split"] not in ("train", "val"):
        raise ValueError(f"real_split must be 'train' or 'val', got {metrics['real_split']!r}")
    if datamodule is not None:
        n, split = metrics["num_real"], metrics["real_split"]
        try:
            size = datamodule.split_size(split)  # sets the data up (a dataset missing offline passes through)
        except ValueError as err:
            raise ValueError(f"the data ({type(datamodule).__name__}) could not be set up to count its {split} split: "
                             f"{err}") from err
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= size:
            raise ValueError(f"num_real={n!r} must be an integer in [1, {size}], the size of the {split} split; "
                             "lower num_real or pick the other split")
