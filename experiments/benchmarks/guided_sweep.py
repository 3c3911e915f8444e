"""Guided sampling throughput: the textbook loop against guidelab's sweep, same nets, same process.

    python experiments/benchmarks/guided_sweep.py            # GPU: CIFAR-10 preset UNet + encoder_cifar10
    python experiments/benchmarks/guided_sweep.py --quick    # CPU, tiny (digits) nets, < 2 minutes

Nets come from conf/net/unet_cifar10.yaml and encoder_cifar10.yaml (random weights, eval mode, frozen).
The textbook loop is the one of ../shared/reference (classifier-guided DDPM: eps from the model, grad of
log_softmax from the classifier, eps - w sqrt(1 - abar) grad, posterior-mean update), fp32 eager, one scale
per call. Per-sample rates are compared: the slower paths run on fewer samples than the fast ones (said in
the output). Every path samples `--steps` respaced steps; DPM-Solver++(2M) runs at `--solver-steps`.
Every path runs at `--batch` (memory compared at equal batch), and the compiled sweep once more at the
shipped default batch (conf/sweep_settings, what guidelab-sweep runs); `fast_path=graphs` (CUDA graphs) is a
row of its own, and so are the classifier on a second CUDA stream (`streams`) and the classifier's gradient
compiled with FastPath.recompute (`recompute`); `--variants` picks among these
compiled rows, each followed by its step cost. A variant that fails is reported and the others still run.
Also printed (work_per_sample.py): FLOPs and bytes per sample of the UNet and of the classifier's gradient,
and the guided/unguided step ratios they alone would give.
Prints a table and writes it as JSON (--out) with the device, versions and settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from guidelab.apps.config import compose_config
from guidelab.diffusion import ClassifierGuidance, NoiseSchedule, sample
from guidelab.evaluation.fast_nets import FastPath
from guidelab.evaluation.guidance_methods import SweepMethod
from guidelab.evaluation.guided_sweep import run_guided_sweep
from guidelab.evaluation.sweep_settings import SweepSettings
from work_per_sample import work_per_sample  # beside this file

NET_DIR = Path(__file__).resolve().parents[2] / "src" / "guidelab" / "conf" / "net"
SCALES = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0]


class Variant(NamedTuple):
    """A compiled sweep row of --variants."""

    label: str
    fast_path: str
    shipped_batch: bool = False  # at the shipped batch (else --batch)
    streams: bool = False  # the classifier on a second stream
    recompute: bool = False  # FastPath.recompute, which no fast_path mode sets yet


VARIANTS = {
    "default": Variant("bf16 + channels_last + compile (default on GPU)", "on"),
    "shipped": Variant("bf16 + channels_last + compile, batch {shipped} (shipped default)", "on", shipped_batch=True),
    "graphs": Variant("compiled + CUDA graphs (fast_path=graphs)", "graphs"),
    "streams": Variant("compiled, classifier on a second stream (method.classifier.streams)", "on", streams=True),
    "recompute": Variant("compiled, classifier gradient recomputed (FastPath.recompute)", "on", recompute=True),
}

DEFAULT_VARIANTS = ["default", "shipped", "graphs", "streams"]


@contextmanager
def recomputing(enabled: bool):
    """While enabled, every compiled FastPath the sweep and step_cost choose has `recompute` on: the row of a
    candidate that is not a fast_path mode yet."""
    if not enabled:
        yield
        return
    choose = FastPath.__dict__["choose"]

    def choose_recomputing(cls, mode, device):
        path = choose.__func__(cls, mode, device)
        return replace(path, recompute=True) if path.compile else path

    FastPath.choose = classmethod(choose_recomputing)
    try:
        yield
    finally:
        FastPath.choose = choose


class NoMetrics:
    """The sweep's metrics interface doing nothing: the benchmark times sampling only."""

    def reset_fake(self):
        pass

    def update_fake(self, images, targets):
        pass

    def compute(self):
        return {}


def build_nets(preset: str, device):
    """(eps-model, classifier, image_shape) from the net configs, random weights, eval, frozen."""
    shape = (3, 32, 32) if preset == "cifar10" else (1, 8, 8)
    size = dict(image_size=shape[-1], in_channels=shape[0])
    torch.manual_seed(0)
    unet = instantiate(OmegaConf.load(NET_DIR / f"unet_{preset}.yaml"), **size)
    classifier = instantiate(OmegaConf.load(NET_DIR / f"encoder_{preset}.yaml"), **size, num_classes=10)
    return (unet.to(device).eval().requires_grad_(False), classifier.to(device).eval().requires_grad_(False), shape)


def textbook_sample(model, classifier, schedule: NoiseSchedule, shape, target: int, scale: float, device):
    """The reference's classifier-guided DDPM loop (one scale for the whole batch), on a respaced schedule."""
    betas = schedule.betas.float().to(device)
    alphas_cumprod = schedule.alphas_cumprod.float().to(device)
    x = torch.randn(shape, device=device)
    y = torch.full((shape[0],), target, device=device)
    for i in reversed(range(schedule.num_steps)):
        t = torch.full((shape[0],), int(schedule.timesteps[i]), device=device)
        with torch.no_grad():
            eps_uncond = model(x, t)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(classifier(x_in, t), dim=-1)
            grad = torch.autograd.grad(log_probs[torch.arange(len(y)), y].sum(), x_in)[0]
        alpha_bar = alphas_cumprod[i]
        eps = eps_uncond - scale * torch.sqrt(1 - alpha_bar) * grad
        x0 = (x - torch.sqrt(1 - alpha_bar) * eps) / torch.sqrt(alpha_bar)
        if i > 0:
            alpha_bar_prev = alphas_cumprod[i - 1]
            coef1 = betas[i] * torch.sqrt(alpha_bar_prev) / (1 - alpha_bar)
            coef2 = (1 - alpha_bar_prev) * torch.sqrt(1 - betas[i]) / (1 - alpha_bar)
            var = betas[i] * (1 - alpha_bar_prev) / (1 - alpha_bar)
            x = coef1 * x0 + coef2 * x + torch.sqrt(var) * torch.randn_like(x)
        else:
            x = x0
    return x


def settings_from_config(**overrides) -> SweepSettings:
    """The shipped sweep settings (conf/sweep_settings/default.yaml) with `overrides`."""
    shipped = compose_config("sweep", ["ddpm_checkpoint=-", "eval_classifier_checkpoint=-"]).guidance
    return SweepSettings.from_config({**OmegaConf.to_container(shipped, resolve=True), **overrides})


class Meter:
    """Wall time and peak memory (CUDA allocator; nothing on CPU) of one measured block: the most allocated, and the
    most reserved. CUDA graphs replay into a private pool recorded in their warm-up, which the allocated peak never
    sees; the reserved peak holds every live pool (this block's, and any an earlier row left alive) and the
    allocator's cached blocks."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.start
        cuda = self.device.type == "cuda"
        self.peak_gib = torch.cuda.max_memory_allocated(self.device) / 2**30 if cuda else None
        self.reserved_gib = torch.cuda.max_memory_reserved(self.device) / 2**30 if cuda else None


def run_textbook(model, classifier, schedule, shape, batch, scales, device):
    with Meter(device) as meter:
        for k, w in enumerate(scales):
            textbook_sample(model, classifier, schedule, (batch, *shape), k % 10, w, device)
    return {"samples": batch * len(scales), "seconds": meter.seconds, "peak_gib": meter.peak_gib,
            "peak_reserved_gib": meter.reserved_gib}


def run_sweep(model, classifier, schedule, shape, settings, device, streams=False):
    methods = {"classifier": SweepMethod("classifier", ClassifierGuidance(classifier, streams=streams), model)}
    with Meter(device) as meter:
        result = run_guided_sweep(methods, schedule, shape, 10, NoMetrics(), settings, device=device, progress=False)
    samples = settings.samples_per_scale * len(settings.scales)
    return {"samples": samples, "seconds": result.timings["sampling_s"], "peak_gib": meter.peak_gib,
            "peak_reserved_gib": meter.reserved_gib}


def step_cost(model, classifier, schedule, shape, batch, fast_path, device, steps, streams=False):
    """Milliseconds per sampling step, unguided (scale 0: no classifier) and guided (scale 1), one batch."""
    path = FastPath.choose(fast_path, device)
    wrapped_model = path.wrap(model)
    guidance = ClassifierGuidance(path.wrap(classifier), streams=streams)
    out = {"batch": batch}
    y = torch.zeros(batch, dtype=torch.long, device=device)
    with path.sampling(device):  # as the sweep runs (cuDNN benchmark mode off the exact path)
        for name, w in (("unguided", 0.0), ("guided", 1.0)):
            run = lambda n: sample(wrapped_model, schedule, (batch, *shape), guidance=guidance, y=y,
                                   scale=w, steps=n, sampler="ddim", device=device)
            run(2)  # warm-up (and compilation)
            with Meter(device) as meter:
                run(steps)
            out[f"{name}_ms"] = 1000 * meter.seconds / steps
    out["guided_over_unguided"] = out["guided_ms"] / out["unguided_ms"]
    return out


def environment(device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "device": str(device), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU, tiny digits nets, few samples (< 2 minutes)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (50; --quick 10)")
    parser.add_argument("--solver-steps", type=int, default=None, help="DPM-Solver++ steps (20; --quick 4)")
    parser.add_argument("--batch", type=int, default=None, help="batch size of every path (512; --quick 32)")
    parser.add_argument("--fast-mode", choices=["on", "eager"], default=None,
                        help="fast path of the solver rows and whether the compiled rows run (default: on with CUDA, "
                             "eager on CPU; --quick --fast-mode on dry-runs the GPU's rows on CPU, minutes of compile)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS,
                        help="compiled sweep rows to run, each followed by its step cost (default: all but the "
                             "candidate recompute, so that the default run does not grow)")
    parser.add_argument("--out", type=Path, default=Path("guided_sweep_benchmark.json"))
    args = parser.parse_args(argv)

    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    preset = "digits" if args.quick else "cifar10"
    batch = args.batch or (32 if args.quick else 512)
    args.steps = args.steps or (10 if args.quick else 50)
    args.solver_steps = args.solver_steps or (4 if args.quick else 20)
    # samples per scale: the fast paths sample all 8 scales x batch; the slow ones fewer (rates compared)
    slow_per_scale, fast_per_scale = (batch // 4, batch // 2) if args.quick else (batch // 8, batch)
    model, classifier, shape = build_nets(preset, device)
    schedule = NoiseSchedule.linear(1000)
    run_schedule = schedule.respace(args.steps)
    fast_mode = args.fast_mode or ("on" if device.type == "cuda" else "eager")  # compile on CPU: minutes of warm-up
    print(f"device {device} ({environment(device).get('gpu', platform.processor() or 'cpu')}), nets {preset}, "
          f"batch {batch}, {args.steps} steps, scales {SCALES}", flush=True)

    shipped_batch = settings_from_config().batch_size  # what guidelab-sweep runs unless told otherwise

    def settings(per_scale, fast_path, sampler="ddim", steps=args.steps, scales=SCALES, batch_size=batch):
        return settings_from_config(scales=scales, samples_per_scale=per_scale, batch_size=batch_size,
                                    sampler=sampler, steps=steps, clip_denoised=True, fast_path=fast_path)

    work = work_per_sample(model, classifier, shape, device, batch=64, bf16=True)  # as the fast path runs them
    print(f"per sample: UNet forward {work['unet_forward']['gflop']:.2f} GFLOP, "
          f"{work['unet_forward']['mib_total']:.1f} MiB moved; classifier forward + backward "
          f"{work['classifier_forward_backward']['gflop']:.2f} GFLOP, "
          f"{work['classifier_forward_backward']['mib_total']:.1f} MiB; guided/unguided if compute-bound "
          f"{work['flop_ideal_guided_over_unguided']:.2f}, if memory-bound {work['byte_ideal_guided_over_unguided']:.2f}",
          flush=True)
    textbook_scales = SCALES[2:3]  # w = 1: its cost does not depend on the scale
    rows, costs, failed = {}, {}, {}
    record = {"command": " ".join([sys.executable, *sys.argv]), "environment": environment(device),
              "settings": {"nets": preset, "batch": batch, "steps": args.steps, "solver_steps": args.solver_steps,
                           "scales": SCALES, "textbook_scales": textbook_scales, "shipped_batch": shipped_batch,
                           "variants": args.variants if fast_mode == "on" else []},
              "work_per_sample": work, "paths": rows, "step_cost": costs, "failed": failed, "complete": False}

    def measured(name, row):  # each figure printed and written as it comes: a run cut short keeps what it measured
        rows[name] = row
        print(f"{name}: {row['samples'] / row['seconds']:.1f} samples/s over {row['samples']} samples", flush=True)
        args.out.write_text(json.dumps(record, indent=2))

    measured("textbook loop (fp32 eager, one scale per call)", run_textbook(
        model, classifier, run_schedule, shape, batch, textbook_scales, device))
    measured("sweep, exact (fp32 eager)", run_sweep(model, classifier, schedule, shape,
                                                    settings(slow_per_scale, "off"), device))
    measured("sweep, bf16 + channels_last, eager", run_sweep(model, classifier, schedule, shape,
                                                             settings(slow_per_scale, "eager"), device))

    def measure_cost(name, mode, size, streams):
        try:
            cost = costs[name] = step_cost(model, classifier, run_schedule, shape, size, mode, device, n, streams)
            print(f"step cost ({name if size != batch else f'{name}, batch {size}'}): unguided "
                  f"{cost['unguided_ms']:.1f} ms, guided {cost['guided_ms']:.1f} ms, ratio "
                  f"{cost['guided_over_unguided']:.2f}", flush=True)
            args.out.write_text(json.dumps(record, indent=2))
        except Exception as err:  # a variant that fails on this machine must not cost the others
            print(f"step cost ({name}): FAILED {type(err).__name__}: {err}", flush=True)
            failed[f"step cost ({name})"] = f"{type(err).__name__}: {err}"

    n = 5 if args.quick else 10  # steps per step-cost figure
    measure_cost("exact", "off", batch, False)
    if fast_mode != "on":
        measure_cost(fast_mode, fast_mode, batch, False)
    # each compiled variant: its sweep row, then its step cost while its compiled code is warm, so that a run
    # cut short by a time limit keeps complete pairs
    for variant in args.variants if fast_mode == "on" else []:
        row = VARIANTS[variant]
        mode, streams = row.fast_path, row.streams
        size = shipped_batch if row.shipped_batch else batch
        name = f"sweep, {row.label.format(shipped=shipped_batch)}"
        with recomputing(row.recompute):
            try:
                warm = time.perf_counter()  # the run itself for 2 steps: compiles for every shape it meets (one
                run_sweep(model, classifier, schedule, shape,  # per net when the chunks divide evenly)
                          settings(fast_per_scale, mode, steps=2, batch_size=size), device, streams)
                print(f"{name}: torch.compile warm-up {time.perf_counter() - warm:.0f} s", flush=True)
                measured(name, {**run_sweep(model, classifier, schedule, shape,
                                            settings(fast_per_scale, mode, batch_size=size), device, streams),
                                "batch": size})
            except Exception as err:  # a variant that fails on this machine must not cost the others
                print(f"{name}: FAILED {type(err).__name__}: {err}", flush=True)
                failed[name] = f"{type(err).__name__}: {err}"
                continue
            measure_cost(mode + ("" if size == batch else f", batch {size}") + (", streams" if streams else "")
                         + (", recompute" if row.recompute else ""), mode, size, streams)

    for solver, grid in (("dpm++2m", "logSNR grid"), ("dpm++2m-t", "t grid")):  # the t grid matches DDIM-50 on digits
        measured(f"sweep, DPM-Solver++(2M) {args.solver_steps} steps, {grid}, {fast_mode}", run_sweep(
            model, classifier, schedule, shape, settings(fast_per_scale, fast_mode, solver, args.solver_steps), device))

    base = rows["textbook loop (fp32 eager, one scale per call)"]
    base_rate = base["samples"] / base["seconds"]
    print(f"\n{'path':74s} {'samples':>8s} {'samples/s':>10s} {'x textbook':>10s} {'peak GiB':>9s} "
          f"{'reserved GiB':>13s}")
    for name, row in rows.items():
        row["samples_per_s"] = row["samples"] / row["seconds"]
        row["speedup"] = row["samples_per_s"] / base_rate
        peak, reserved = ("–" if row.get(key) is None else f"{row[key]:.2f}" for key in ("peak_gib", "peak_reserved_gib"))
        print(f"{name:74s} {row['samples']:8d} {row['samples_per_s']:10.1f} {row['speedup']:10.2f} {peak:>9s} "
              f"{reserved:>13s}")
    print(f"(per-sample rates: the textbook loop ran {base['samples']} samples, the exact/eager sweeps "
          f"{slow_per_scale * len(SCALES)}, the fast ones {fast_per_scale * len(SCALES)}; peak memory is the CUDA "
          f"allocator's, allocated and reserved (CUDA graph pools show in the latter only); batch {batch} for all "
          "but the shipped-default row; step costs above)")

    record["complete"] = True
    args.out.write_text(json.dumps(record, indent=2))
    print(f"written {args.out}")
    return record


if __name__ == "__main__":
    main()
