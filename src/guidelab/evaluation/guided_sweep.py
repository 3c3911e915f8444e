"""One guided sweep: sample at every guidance scale in the same batches, then score each scale.

Shared by `GuidedSamplingCallback` (during classifier training) and `guidelab-sweep` (standalone).
Under DDP each rank samples a shard; the metrics sync in compute(), so every rank must call `run_guided_sweep`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from rich.progress import Progress

from guidelab.diffusion import GuidanceInterval, NoiseSchedule, resolve_guidance, sample
from guidelab.diffusion.scale_schedules import SCALE_SCHEDULES, scheduled_scale
from guidelab.metrics import QualityDiversityMetrics

from .fast_nets import FastPath
from .result import SweepResult


@dataclass
class SweepSettings:
    scales: list[float] = field(default_factory=lambda: [-1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    samples_per_scale: int = 500
    batch_size: int = 1024
    sampler: str = "ddim"
    steps: int | None = 50
    eta: float = 0.0
    form: str = "eps"
    clip_denoised: bool = True
    seed: int = 0
    grid_size: int = 20
    guidance: str = "classifier"  # classifier | cfg (classifier-free: the eps-model is class-conditional)
    fast_path: str = "auto"  # auto (bf16 + channels_last + compile on CUDA, exact fp32 on CPU) | on | eager | off
    scale_schedule: str = "constant"  # constant | linear | cosine: w * f(t) along the trajectory (scale_schedules.py)
    interval: list[int] | None = None  # [t_lo, t_hi]: guide only for original timesteps inside (Kynkaanniemi 2024)

    def __post_init__(self):
        self.scales = sorted(float(s) for s in self.scales)
        if not self.scales:
            raise ValueError("scales must list at least one guidance scale")
        if any(s != s or s in (float("inf"), float("-inf")) for s in self.scales):
            raise ValueError(f"guidance scales must be finite, got {self.scales}")
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"guidance scales must be distinct, got {self.scales}")
        if self.samples_per_scale < 4:
            raise ValueError("samples_per_scale must be >= 4 (precision/recall with k=3 needs k+1 samples), "
                             f"got {self.samples_per_scale}")
        if self.guidance not in ("classifier", "cfg"):
            raise ValueError(f"guidance must be 'classifier' or 'cfg', got {self.guidance!r}")
        FastPath.choose(self.fast_path, "cpu")  # validates the name
        if self.scale_schedule not in SCALE_SCHEDULES:
            raise ValueError(f"scale_schedule must be one of {sorted(SCALE_SCHEDULES)}, got {self.scale_schedule!r}")
        if self.interval is not None:
            self.interval = [int(v) for v in self.interval]
            if len(self.interval) != 2 or not 0 <= self.interval[0] <= self.interval[1]:
                raise ValueError(f"interval must be [t_lo, t_hi] with 0 <= t_lo <= t_hi, got {self.interval}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


    def check_steps(self, T: int) -> None:
        """Respaced steps must fit the DDPM's schedule; checked before any sampling."""
        if self.steps is not None and not 1 <= self.steps <= T:
            raise ValueError(f"guidance.steps must be in [1, T={T}] of the DDPM, got {self.steps}")
        if self.interval is not None and self.interval[0] >= T:
            raise ValueError(f"guidance.interval={self.interval} starts beyond the DDPM's last timestep T-1={T - 1}")


def metrics_with_real_set(eval_classifier, datamodule, num_classes: int, *, features: str, inception_weights,
                          num_real: int, split: str, batch_size: int, device, rank: int = 0,
                          world: int = 1) -> QualityDiversityMetrics:
    """QualityDiversityMetrics with the real set (the first `num_real` images of `split`) added once;
    under DDP each rank adds its stride of it and compute() syncs."""
    metrics = QualityDiversityMetrics(eval_classifier, num_classes, features=features,
                                      inception_weights=inception_weights).to(device)
    real, _ = datamodule.real_images(num_real, split=split)
    for batch in real[rank::world].split(batch_size):
        metrics.update_real(batch.to(device))
    return metrics


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _TrajectoryProbe:
    """Accumulates, per sampling step and scale, the guidance gradient norm and p(target | x_t), over the
    rows the guide evaluated (rows whose scale is 0 at a step skip the classifier: log_prob NaN there);
    a (scale, step) with no evaluated row reports None."""

    def __init__(self, scale_index: torch.Tensor, num_scales: int, num_steps: int, device):
        self.scale_index = scale_index
        self.t = [0] * num_steps
        self.sums = torch.zeros(2, num_scales, num_steps, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_scales, num_steps, dtype=torch.float64, device=device)
        self.step = 0

    def start_batch(self, scale_index: torch.Tensor) -> None:
        self.scale_index = scale_index
        self.step = 0

    def __call__(self, info: dict) -> None:
        if info["grad"] is not None:
            evaluated = torch.isfinite(info["log_prob"])
            norms = torch.where(evaluated, info["grad"].flatten(1).norm(dim=1), 0.0).double()
            probs = torch.where(evaluated, info["log_prob"].exp(), 0.0).double()
            self.sums[0, :, self.step].index_add_(0, self.scale_index, norms)
            self.sums[1, :, self.step].index_add_(0, self.scale_index, probs)
            self.counts[:, self.step].index_add_(0, self.scale_index, evaluated.double())
        self.t[self.step] = int(info["timestep"][0])
        self.step += 1

    def summary(self, scales: list[float]) -> dict:
        sums, counts = self.sums.clone(), self.counts.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        means = (sums / counts.clamp(min=1)).tolist()
        evaluated = (counts > 0).tolist()
        kept = [[[m if seen else None for m, seen in zip(line, seen_line)] for line, seen_line in zip(metric, evaluated)]
                for metric in means]  # None: no row of that scale evaluated the guide at that step
        return {"t": self.t, "scales": scales, "grad_norm": kept[0], "p_target": kept[1]}


@contextmanager
def _frozen(*nets):
    """No parameter gradients while sampling (the guidance gradient is w.r.t. x_t alone), so autograd keeps
    no tensors for weight gradients; yields, per net, whether it had trainable parameters (the callback's
    classifier in training), and restores requires_grad afterwards."""
    params = [list(net.parameters()) if isinstance(net, torch.nn.Module) else [] for net in nets]
    flags = [[p.requires_grad for p in group] for group in params]
    for group in params:
        for p in group:
            p.requires_grad_(False)
    try:
        yield [any(group_flags) for group_flags in flags]
    finally:
        for group, group_flags in zip(params, flags):
            for p, flag in zip(group, group_flags):
                p.requires_grad_(flag)


def _plan(settings: SweepSettings, num_classes: int, image_shape, rank: int, world: int):
    """Every (scale, target, x_T) of the sweep, strided across ranks; targets cycle through the classes.

    x_T is drawn for the whole sweep from the seed before sharding, so a deterministic sampler
    (DDIM, eta=0) gives the same samples whatever the number of ranks."""
    n = settings.samples_per_scale
    scale_index = torch.arange(len(settings.scales)).repeat_interleave(n)
    targets = torch.arange(n).remainder(num_classes).repeat(len(settings.scales))
    noise = torch.randn(len(targets), *image_shape, generator=torch.Generator().manual_seed(settings.seed))
    return scale_index[rank::world], targets[rank::world], noise[rank::world]


def run_guided_sweep(
    eps_model,
    classifier,
    schedule: NoiseSchedule,
    image_shape,
    num_classes: int,
    metrics,
    settings: SweepSettings,
    device=None,
    progress: bool = True,
) -> SweepResult:
    """Sample `samples_per_scale` images at each scale (scales mixed in every batch through per-sample
    scales) and compute fid / accuracy / precision / recall per scale with `metrics`
    (a QualityDiversityMetrics whose real set is already added).

    With settings.guidance="cfg", `eps_model` is class-conditional (model(x, t, y), y = num_classes
    meaning unconditional) and `classifier` is ignored."""
    device = torch.device(device) if device is not None else next(eps_model.parameters()).device
    rank, world = _rank_and_world()
    scales = torch.tensor(settings.scales, device=device)
    scale_index, targets, x_T = _plan(settings, num_classes, image_shape, rank, world)
    num_steps = settings.steps or schedule.num_steps
    probe = _TrajectoryProbe(scale_index[:0].to(device), len(settings.scales), num_steps, device)
    generator = torch.Generator(device=device).manual_seed(settings.seed * 1000 + rank)

    fast = FastPath.choose(settings.fast_path, device)
    images = []
    start = time.perf_counter()
    size = settings.batch_size
    chunks = list(zip(scale_index.split(size), targets.split(size), x_T.split(size)))
    with _frozen(eps_model, classifier) as trainable, Progress(disable=not progress or rank != 0, transient=True) as bar:
        eps_model = fast.wrap(eps_model, convert_weights=not trainable[0])
        classifier = fast.wrap(classifier, convert_weights=not trainable[1])
        guidance = resolve_guidance(settings.guidance, eps_model,
                                    classifier if settings.guidance == "classifier" else None,
                                    form=settings.form, null_class=num_classes)
        if settings.interval is not None:
            guidance = GuidanceInterval(guidance, *settings.interval)
        task = bar.add_task("guided sampling", total=len(chunks))
        for chunk_scale, chunk_y, chunk_noise in chunks:
            chunk_scale, chunk_y = chunk_scale.to(device), chunk_y.to(device)
            probe.start_batch(chunk_scale)
            x = sample(
                eps_model, schedule, (len(chunk_y), *image_shape), y=chunk_y, guidance=guidance,
                scale=scheduled_scale(scales[chunk_scale], settings.scale_schedule, schedule.T),
                steps=settings.steps, sampler=settings.sampler, eta=settings.eta,
                clip_denoised=settings.clip_denoised, generator=generator, device=device,
                callback=probe, noise=chunk_noise,
            )
            images.append(x.clamp(-1, 1))
            bar.advance(task)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sampling_s = time.perf_counter() - start
    images = torch.cat(images) if images else torch.empty(0, *image_shape, device=device)

    rows, grids = [], {}
    metrics_start = time.perf_counter()
    total_samples = settings.samples_per_scale * len(settings.scales)
    for k, w in enumerate(settings.scales):
        mine = scale_index.to(device) == k
        metrics.reset_fake()
        metrics.update_fake(images[mine], targets.to(device)[mine])
        row = {"scale": w, **metrics.compute()}
        row["samples_per_s"] = total_samples / sampling_s if sampling_s > 0 else float("nan")
        row["num_samples"] = settings.samples_per_scale
        rows.append(row)
        grids[w] = images[mine][: settings.grid_size].cpu()
    metrics_s = time.perf_counter() - metrics_start

    timings = {"sampling_s": sampling_s, "metrics_s": metrics_s, "total_s": sampling_s + metrics_s,
               "samples_per_s": total_samples / sampling_s if sampling_s > 0 else float("nan"),
               "world_size": world}
    info = {**asdict(settings), "fast": fast.describe(), "steps": num_steps, "T": schedule.T, "schedule": schedule.kind,
            "features": getattr(metrics, "features_kind", None)}
    return SweepResult(rows=rows, settings=info, timings=timings, grids=grids,
                       trajectory=probe.summary(settings.scales))
