"""One guided sweep: every method samples at every guidance scale from the same x_T, then each
(method, scale) is scored.

Shared by `GuidedSamplingCallback` (during classifier training) and `guidelab-sweep` (standalone).
Under DDP each rank samples a shard; the metrics sync in compute(), so every rank must call `run_guided_sweep`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict

import torch
import torch.distributed as dist
from rich.progress import Progress

from guidelab.diffusion import Guidance, NoiseSchedule, sample
from guidelab.diffusion.scale_schedules import scheduled_scale
from guidelab.metrics import QualityDiversityMetrics

from .fast_nets import FastPath, with_fast_nets
from .guidance_methods import SweepMethod
from .result import SweepResult, software_versions
from .sweep_settings import SweepSettings


def metrics_with_real_set(eval_classifier, datamodule, num_classes: int, *, features: str, inception_weights,
                          num_real: int, split: str, batch_size: int, device, rank: int = 0,
                          world: int = 1, progress: bool = True) -> QualityDiversityMetrics:
    """QualityDiversityMetrics with the real set (the first `num_real` images of `split`) added once;
    under DDP each rank adds its stride of it and compute() syncs. A progress bar on rank 0: through Inception,
    tens of thousands of real images take minutes."""
    metrics = QualityDiversityMetrics(eval_classifier, num_classes, features=features,
                                      inception_weights=inception_weights).to(device)
    real, _ = datamodule.real_images(num_real, split=split)
    batches = real[rank::world].split(batch_size)
    with Progress(disable=not progress or rank != 0, transient=True) as bar:
        task = bar.add_task(f"features of {len(real)} real images ({features})", total=len(batches))
        for batch in batches:
            metrics.update_real(batch.to(device))
            bar.advance(task)
            log_line(bar, task)
    return metrics


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _TrajectoryProbe:
    """Accumulates, per sampling step and scale, the guidance gradient norm and p(target | x_t) over the rows
    the guide evaluated (rows whose scale is 0 at a step skip the classifier: log_prob NaN there; a (scale, step)
    with no evaluated row reports None), and the network evaluations per sample of one method."""

    def __init__(self, num_scales: int, num_steps: int, device):
        self.scale_index = torch.zeros(0, dtype=torch.long, device=device)
        self.counted = torch.zeros(0, dtype=torch.bool, device=device)
        self.t = [0] * num_steps
        self.sums = torch.zeros(2, num_scales, num_steps, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_scales, num_steps, dtype=torch.float64, device=device)
        self.step = 0
        self.nfe = 0.0  # per sample, over the steps of one batch (the same for every batch)

    def start_batch(self, scale_index: torch.Tensor, counted: torch.Tensor | None = None) -> None:
        """A new batch: each row's scale, and which rows count (not those that only pad the batch)."""
        self.scale_index = scale_index
        self.counted = torch.ones_like(scale_index, dtype=torch.bool) if counted is None else counted
        self.step = 0
        self.nfe = 0.0

    def __call__(self, info: dict) -> None:
        if info["grad"] is not None and info["log_prob"] is not None:
            evaluated = torch.isfinite(info["log_prob"]) & self.counted
            norms = torch.where(evaluated, info["grad"].flatten(1).norm(dim=1), 0.0).double()
            probs = torch.where(evaluated, info["log_prob"].exp(), 0.0).double()
            self.sums[0, :, self.step].index_add_(0, self.scale_index, norms)
            self.sums[1, :, self.step].index_add_(0, self.scale_index, probs)
            self.counts[:, self.step].index_add_(0, self.scale_index, evaluated.double())
        self.t[self.step] = info["timestep_value"]
        self.nfe += float(info["nfe"])
        self.step += 1

    def summary(self, scales: list[float]) -> dict:
        sums, counts = self.sums.clone(), self.counts.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        means, evaluated = (sums / counts.clamp(min=1)).tolist(), (counts > 0).tolist()
        kept = [[[m if seen else None for m, seen in zip(line, seen_line)] for line, seen_line in zip(metric, evaluated)]
                for metric in means]
        return {"t": self.t, "scales": scales, "grad_norm": kept[0], "p_target": kept[1]}


@contextmanager
def _frozen(*owners):
    """No parameter gradients while sampling (the guidance gradient is w.r.t. x_t alone), so autograd keeps
    nothing for weight gradients. Yields the set of ids of the nets that had trainable parameters (the
    callback's classifier in training); restores requires_grad afterwards."""
    nets = [net for owner in owners for net in _nets_in(owner)]
    flags = {id(net): [p.requires_grad for p in net.parameters()] for net in nets}
    trainable = {key for key, values in flags.items() if any(values)}
    for net in nets:
        net.requires_grad_(False)
    try:
        yield trainable
    finally:
        for net in nets:
            for p, flag in zip(net.parameters(), flags[id(net)]):
                p.requires_grad_(flag)


def _nets_in(owner) -> list[torch.nn.Module]:
    """The nn.Modules a model or guidance object holds (itself, its attributes, inner and part guidances)."""
    if isinstance(owner, torch.nn.Module):
        return [owner]
    found = []
    for value in vars(owner).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (torch.nn.Module, Guidance)):
                found += [net for net in _nets_in(item) if all(net is not seen for seen in found)]
    return found


def _plan(settings: SweepSettings, num_classes: int, image_shape, rank: int, world: int):
    """Every (scale, target, x_T) of the sweep, strided across ranks; targets cycle through the classes.

    x_T is drawn for the whole sweep from the seed before sharding, so a deterministic sampler
    (DDIM, eta=0) gives the same samples whatever the number of ranks; every method gets the same plan."""
    n = settings.samples_per_scale
    scale_index = torch.arange(len(settings.scales)).repeat_interleave(n)
    targets = torch.arange(n).remainder(num_classes).repeat(len(settings.scales))
    noise = torch.randn(len(targets), *image_shape, generator=torch.Generator().manual_seed(settings.seed))
    return scale_index[rank::world], targets[rank::world], noise[rank::world]


def _sample_method(method: SweepMethod, schedule, image_shape, plan, settings: SweepSettings, device, bar):
    """All of one method's samples, the scales mixed in every batch; returns (images, probe, seconds)."""
    scale_index, targets, x_T = plan
    rank, _ = _rank_and_world()
    options = settings.for_method(method)
    scales = torch.tensor(settings.scales)  # on the host: sample() decides there which rows to guide
    probe = _TrajectoryProbe(len(settings.scales), options["steps"] or schedule.num_steps, device)
    generator = torch.Generator(device=device).manual_seed(settings.seed * 1000 + rank)
    fast = FastPath.choose(settings.fast_path, device)
    # chunks of at most batch_size rows, each holding the scales in equal shares (_chunk_rows); compiled nets pad
    # them to one shape (a second shape would cost each net a recompile, and a CUDA-graph recording)
    order, padding, count = _chunk_rows(scale_index, len(settings.scales), settings.batch_size, pad=fast.compile)
    chunks = list(zip(*(rows[order].tensor_split(count) for rows in (scale_index, targets, x_T)),
                      (~padding).tensor_split(count)))
    task = bar.add_task(f"guided sampling: {method.name}", total=len(chunks))
    images = []
    start = time.perf_counter()
    guidance = settings.guidance_for(method)
    with _frozen(method.model, guidance) as trainable, fast.sampling(device):
        model, guidance = with_fast_nets((method.model, guidance), fast, trainable)
        for chunk_scale, chunk_y, chunk_noise, chunk_counted in chunks:
            probe.start_batch(chunk_scale.to(device), chunk_counted.to(device))
            x = sample(model, schedule, (len(chunk_y), *image_shape), guidance=guidance, y=chunk_y.to(device),
                       scale=scheduled_scale(scales[chunk_scale], settings.scale_schedule, schedule.T),
                       clip_denoised=settings.clip_denoised, generator=generator,
                       device=device, callback=probe, noise=chunk_noise, **options)
            images.append(x.clamp(-1, 1))
            bar.advance(task)
            log_line(bar, task)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    images = torch.cat(images)[~padding.to(device)] if images else torch.empty(0, *image_shape, device=device)
    return images[torch.argsort(order[~padding]).to(device)], probe, seconds  # back in the plan's order


LOG_LINES_EVERY_S = 60.0


def log_line(bar: Progress, task, every_s: float = LOG_LINES_EVERY_S) -> None:
    """Written to a file (a SLURM job's log), a transient Rich bar shows nothing, so a long sweep would log
    nothing: there a plain line on the task's progress, at most every `every_s` seconds (host clock only)."""
    if bar.disable or draws_live(bar.console):
        return
    state = bar.tasks[task]
    now = time.monotonic()
    if now - state.fields.get("last_line", state.start_time or now) < every_s and not state.finished:
        return
    bar.update(task, last_line=now)
    rate = f", {state.speed:.3g} batches/s" if state.speed else ""
    bar.console.print(f"{state.description}: batch {state.completed:g}/{state.total:g}{rate}", markup=False,
                      highlight=False, soft_wrap=True)


def draws_live(console) -> bool:
    """Whether Rich redraws a progress bar in place on `console` (a terminal or a notebook); elsewhere (a file,
    a pipe) it draws one frame when the bar stops, so plain lines stand in for it."""
    return console.is_terminal or console.is_jupyter


def _chunk_rows(scale_index: torch.Tensor, num_scales: int, batch_size: int, pad: bool):
    """How a sweep cuts its rows: (order, padding, count) where `order` lists plan rows, `padding` marks the
    entries of `order` that repeat a row only to fill a chunk (their samples are dropped), and `count` is the
    number of near-equal chunks to cut `order` into, each of at most `batch_size` rows.

    The rows are dealt out (_dealt), so every chunk holds each scale in an equal share, give or take one row: the
    shipped 7 scales x 500 at batch 1,024 give 4 chunks of 125 rows per scale. With `pad`, a share that does not
    divide is filled up instead, with repeats of the scale's last row: 7 x 1,500 rows become 11 chunks of 137
    rows per scale (49 repeats, 0.5% more work), where near-equal chunks held 954 or 955 rows and 817 to 819 of
    them guided (a classifier skips the w=0 rows). Every chunk then has one shape for the eps-model and one for the
    classifier, so each compiles once. Without `pad` (eager nets, where a new shape costs nothing), and when
    the scales outnumber the batch, no row is repeated."""
    rows = torch.arange(len(scale_index))
    per_scale = torch.bincount(scale_index, minlength=num_scales).tolist()
    present, most = sum(n > 0 for n in per_scale), max(per_scale, default=0)
    count = max(1, math.ceil(len(rows) / batch_size))
    if pad and 0 < present <= batch_size:
        count = math.ceil(present * most / batch_size)
        while present * math.ceil(most / count) > batch_size:  # ends: at count = most, a chunk is one row per scale
            count += 1
        share = math.ceil(most / count)  # rows of each scale in every chunk
        fill = [(scale_index == k).nonzero()[-1].repeat(count * share - n) for k, n in enumerate(per_scale) if n]
        rows = torch.cat([rows, *fill])
    dealt = _dealt(scale_index[rows], num_scales)
    return rows[dealt], dealt >= len(scale_index), count


def _dealt(scale_index: torch.Tensor, num_scales: int) -> torch.Tensor:
    """The order that deals the rows out like cards: the first row of every scale, then the second of every scale,
    and so on (a scale whose rows run out drops out). Any run of consecutive rows then holds each scale in an equal
    share, give or take one row."""
    occurrence = torch.nn.functional.one_hot(scale_index, num_scales).cumsum(0).gather(1, scale_index[:, None]) - 1
    return torch.argsort(occurrence.squeeze(1) * num_scales + scale_index, stable=True)


def run_guided_sweep(
    methods: dict[str, SweepMethod],
    schedule: NoiseSchedule,
    image_shape,
    num_classes: int,
    metrics,
    settings: SweepSettings,
    device=None,
    progress: bool = True,
    on_method_done: Callable[[SweepResult], None] | None = None,
) -> SweepResult:
    """Sample `samples_per_scale` images at each scale with every method (the same x_T per (scale, target)
    for all of them) and compute fid / accuracy / precision / recall per (method, scale) with `metrics`
    (a QualityDiversityMetrics whose real set is already added). Rows also carry each method's network
    evaluations per sample and seconds per sample.

    `on_method_done(partial)` is called after each method but the last with the result so far (its settings'
    `methods_pending` lists the methods still to sample), so a caller can write it: a sweep that dies in its
    fourth method keeps the first three."""
    first = next(iter(methods.values()))
    device = torch.device(device) if device is not None else next(first.model.parameters()).device
    rank, world = _rank_and_world()
    plan = _plan(settings, num_classes, image_shape, rank, world)
    scale_index, targets = plan[0].to(device), plan[1].to(device)
    total_samples = settings.samples_per_scale * len(settings.scales)

    rows, grids, trajectory, per_method = [], {}, {}, {}
    sampling_s = metrics_s = 0.0

    def result_so_far() -> SweepResult:  # the methods sampled so far
        total = total_samples * len(per_method)
        timings = {"sampling_s": sampling_s, "metrics_s": metrics_s, "total_s": sampling_s + metrics_s,
                   "samples_per_s": total / sampling_s if sampling_s > 0 else float("nan"), "world_size": world}
        info = {**asdict(settings), "num_classes": num_classes, "steps": settings.steps or schedule.num_steps,
                "T": schedule.T, "schedule": schedule.kind, "features": getattr(metrics, "features_kind", None),
                "methods": dict(per_method), "methods_pending": [m for m in methods if m not in per_method],
                "versions": software_versions(device)}
        return SweepResult(rows=list(rows), settings=info, timings=timings, grids=dict(grids),
                           trajectory=dict(trajectory))

    with Progress(disable=not progress or rank != 0, transient=True) as bar:
        for name, method in methods.items():
            images, probe, seconds = _sample_method(method, schedule, image_shape, plan, settings, device, bar)
            sampling_s += seconds
            cost = {"nfe_per_sample": probe.nfe, "s_per_sample": seconds / total_samples * world,
                    "samples_per_s": total_samples / seconds if seconds > 0 else float("nan")}
            metrics_start = time.perf_counter()
            grids[name] = {}
            for k, w in enumerate(settings.scales):
                mine = scale_index == k
                metrics.reset_fake()
                # in batches, as the real set: Inception on every sample of a scale at once (10,000 CIFAR images
                # upsampled to 299x299 are 10.7 GB of input alone) would not fit
                for part, part_targets in zip(images[mine].split(settings.batch_size),
                                              targets[mine].split(settings.batch_size)):
                    metrics.update_fake(part, part_targets)
                rows.append({"method": name, "scale": w, **metrics.compute(), **cost,
                             "num_samples": settings.samples_per_scale,
                             "scale_schedule": settings.scale_schedule_label()})
                grids[name][w] = images[mine][: settings.grid_size].cpu()
            metrics_s += time.perf_counter() - metrics_start
            trajectory[name] = probe.summary(settings.scales)
            per_method[name] = {"sampling_s": seconds, **cost, **settings.for_method(method),
                                "guidance": method.guidance.describe(),
                                "fast": FastPath.choose(settings.fast_path, device).describe()}
            if on_method_done is not None and len(per_method) < len(methods):
                on_method_done(result_so_far())

    return result_so_far()
