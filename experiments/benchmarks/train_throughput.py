"""Training throughput: guidelab-train against diffusers' UNet2DModel, side by side in one process
(`--isolate`: one process per figure).

    python experiments/benchmarks/train_throughput.py                 # issue 11's figures, one GPU, ~4 minutes
    python experiments/benchmarks/train_throughput.py --all           # every figure below (~18 minutes)
    python experiments/benchmarks/train_throughput.py --quick --all   # CPU, tiny nets, ~2.5 minutes on 2 cores
    python experiments/benchmarks/train_throughput.py --compile-mode max-autotune-no-cudagraphs
    python experiments/benchmarks/train_throughput.py --quick --profile --only ours_train_eager   # host overheads
    python experiments/benchmarks/train_throughput.py --only diffusers_compiled ours_plain_compiled --kernels 5
                                                                      # GPU time by kernel kind, ours vs diffusers
    python experiments/benchmarks/train_throughput.py --only ours_plain_compiled ours_train_fast \
        --inductor combo_kernels=True                                 # an inductor setting for every compiled row
    python experiments/benchmarks/train_throughput.py --isolate --only diffusers_compiled ours_plain_compiled
                                                                      # each figure in a fresh process

Figures (images/s, measured after warm-up over a fixed number of optimizer steps, with a device sync at
both ends; random data; bf16 autocast; fused AdamW; batch 128 by default):
  diffusers_eager / diffusers_compiled   UNet2DModel in the DDPM CIFAR-10 configuration, plain PyTorch loop
  ours_plain_eager / ours_plain_compiled the CIFAR-10 preset UNet (net=unet_cifar10) in the same plain loop
  ours_train_eager                       `guidelab-train experiment=cifar10_ddpm trainer=gpu data=synthetic`
                                         through the real path (Lightning Trainer, EMA, CSV logging, progress
                                         bar, checkpoint callbacks incl. the step checkpoint), compile and
                                         channels_last off
  ours_train_fast                        the same with the config's defaults (compile/channels_last: auto; on one
                                         GPU compile auto is torch.compile's reduce-overhead mode, CUDA graphs)
  *_compiled_nchw, ours_train_fast_nchw  compiled without channels_last (inductor chooses the layout)
  ours_train_fast_nographs               ours_train_fast with task.module.compile=default (no CUDA graphs: the
                                         default before the sixteenth session, and what auto picks under DDP)
  ours_train_fast_recompute              ours_train_fast with inductor's thresholds for materialising an
                                         intermediate raised (fast_nets.RECOMPUTE_OPTIONS; fewer bytes in the backward)
  ours_train_fast_ddp1                   ours_train_fast under trainer=ddp with devices=1: DDP's own overhead
  ours_train_fast_ddp1_*                 what might take it back (README.md, "Multi-GPU"): _same_stream wraps the
                                         module in DDP on the current stream, _whole_graph compiles without dynamo's
                                         DDPOptimizer graph splits, _graphs compiles with CUDA graphs under DDP

One JSON line per figure, then a table. diffusers is the optional extra `bench`
(`pip install 'guidelab[bench]'`), never a runtime dependency: without it the diffusers rows are skipped
with a message. Where the GPU figures stand is in README.md beside this file.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

# Kineto leaves CUPTI attached after a torch.profiler session unless TEARDOWN_CUPTI=1 (pytorch/pytorch#144455:
# later steps run 10-20% slower). With --kernels every row but the first would be timed after a profile; set
# before torch loads Kineto. `images_per_s_after_profile` on each profiled row checks that nothing lingers.
os.environ.setdefault("TEARDOWN_CUPTI", "1")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from guidelab.apps.config import compose_config  # noqa: E402
from guidelab.apps.train import train  # noqa: E402
from guidelab.diffusion import NoiseSchedule  # noqa: E402
from guidelab.evaluation.result import software_versions  # noqa: E402
from guidelab.modules.base import COMPILE_MODES, build_net  # noqa: E402

# google/ddpm-cifar10-32 (Ho et al. 2020's CIFAR-10 model as diffusers ships it)
DIFFUSERS_CIFAR10 = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
    "block_out_channels": (128, 256, 256, 256),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 32, "norm_eps": 1e-6, "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
}
# --quick: digits-sized stand-ins of both nets
DIFFUSERS_QUICK = {**DIFFUSERS_CIFAR10, "sample_size": 8, "block_out_channels": (16, 32, 32, 32),
                   "layers_per_block": 1, "norm_num_groups": 8}
QUICK_NET = ["net.base_channels=16", "net.num_res_blocks=1", "net.attention_resolutions=[4]", "net.groups=8"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def collect_garbage() -> None:
    """A full Python garbage collection now, before a timed window, so that none falls inside it. After a compile
    the process holds about a million Python objects; on the CPU machine one full collection of 0.7 million took
    0.36 s, which 40 timed steps would carry as 9 ms each (a scratch probe of the eleventh session)."""
    gc.collect()


def fresh_state(device: torch.device) -> None:
    """Before each row: the compiled code, Python objects and cached device memory that earlier rows left behind
    are let go, so that a row's figure depends less on its place in the run. In the eleventh session's run, the
    first compiled row was the only fast one. dynamo's caches are per process: every `nn.Module.compile` compiles
    the same code object (Module._call_impl), whose cache then holds the entries of every net compiled so far."""
    torch._dynamo.reset()
    collect_garbage()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------------------------- plain loops
KERNEL_KINDS = (  # (category, substrings of a CUDA kernel's lowercased name), first match wins: the order matters
    ("triton (compiled fusions)", ("triton",)),  # before the others: inductor names kernels after the ops it fused
    ("attention (SDPA)", ("flash", "fmha", "attention")),
    ("layout conversions (cuDNN)", ("nchwtonhwc", "nhwctonchw")),  # what a mixed memory format costs
    ("convolution (cuDNN)", ("conv", "cudnn", "implicit_gemm", "dgrad", "wgrad", "fprop")),
    ("matmul (cuBLAS)", ("gemm", "cublas", "cutlass", "xmma")),
    ("optimizer (fused AdamW)", ("adam",)),
    ("foreach (EMA, clipping)", ("multi_tensor", "foreach")),
    ("GroupNorm (eager)", ("group_norm", "groupnorm", "rowwisemoments", "computefusedparams")),
    ("copies / layout", ("copy", "memcpy", "memset", "transpose", "cat")),
    ("elementwise / reductions (eager)", ("elementwise", "vectorized", "reduce_kernel")),
)


NAMESPACES = re.compile(r"\b(?:at::native::|at::|c10::|\(anonymous namespace\)::)|^void ")


def kernel_name(key: str, width: int = 110) -> str:
    """A kernel's name without ATen's namespaces, cut to `width`. ATen's elementwise kernels all begin
    "void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native:" and name their
    op (direct_copy_kernel_cuda, a MulFunctor, ...) only after that, where the eleventh session's 90-character cut
    had stopped (its 77 "copies" per step were sorted by the whole name, which the record does not keep)."""
    return NAMESPACES.sub("", key)[:width]


def kernel_breakdown(prof, steps: int, wall_ms: float) -> dict:
    """GPU milliseconds per step by kernel category, and the 15 costliest kernels, from a torch.profiler run;
    with `wall_ms` (the profiled steps' wall time per step), the share of it the GPU spends in kernels, and the
    host's costliest ops by self CPU time (where an idle GPU waits: launches, guards, wrappers)."""
    kinds: dict[str, float] = {}
    kernels, host = [], []
    for event in prof.key_averages():
        if event.device_type.name == "CPU" and event.self_cpu_time_total:
            host.append((event.self_cpu_time_total / 1000 / steps, event.count // steps, event.key[:90]))
        gpu_us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        on_device = event.device_type.name in ("CUDA", "PrivateUse1")
        if not gpu_us or not on_device or getattr(event, "is_user_annotation", False):
            continue  # annotations (Optimizer.step#...) span kernels counted on their own
        name = event.key.lower()
        kind = next((k for k, keys in KERNEL_KINDS if any(key in name for key in keys)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + gpu_us / 1000 / steps
        kernels.append((gpu_us / 1000 / steps, event.count // steps, kernel_name(event.key)))
    kernels.sort(reverse=True)
    host.sort(reverse=True)
    launchers: dict[tuple[str, str], list] = {}  # (outermost op, op that launched) -> [GPU us, kernels]
    for event in prof.events():
        if event.device_type.name != "CPU" or not getattr(event, "kernels", None):
            continue
        root = event
        while root.cpu_parent is not None:
            root = root.cpu_parent
        entry = launchers.setdefault((root.name[:70], event.name[:50]), [0.0, 0])
        entry[0] += sum(kernel.duration for kernel in event.kernels)
        entry[1] += len(event.kernels)
    launched = sorted(launchers.items(), key=lambda kv: -kv[1][0])[:10]
    gpu_ms = sum(kinds.values())

    def listed(items, n):
        return [{"ms_per_step": round(ms, 3), "calls_per_step": calls, "name": name} for ms, calls, name in items[:n]]

    return {"ms_per_step_by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "gpu_ms_per_step": gpu_ms, "wall_ms_per_step": wall_ms, "gpu_busy": gpu_ms / wall_ms,
            "top_kernels": listed(kernels, 15),
            "gpu_ms_by_launcher": [{"ms_per_step": round(us / 1000 / steps, 3), "kernels_per_step": n // steps,
                                    "outermost_op": root, "op": op} for (root, op), (us, n) in launched],
            "host_self_ms_per_step": sum(ms for ms, _, _ in host),
            "top_host_ops": listed(host, 12)}


def print_kernels(name: str, kernels: dict) -> None:
    """What `kernel_breakdown` found, as lines under the row's name."""
    print(f"{name}: GPU ms per step by kind " + json.dumps(
        {k: round(v, 2) for k, v in kernels["ms_per_step_by_kind"].items()}), flush=True)
    for kernel in kernels["top_kernels"]:
        print(f"    {kernel['ms_per_step']:8.3f} ms x{kernel['calls_per_step']:<4d} {kernel['name']}")
    print(f"{name}: GPU ms per step by the op that launched the kernels (outermost op / launching op):")
    for launch in kernels["gpu_ms_by_launcher"]:
        print(f"    {launch['ms_per_step']:8.3f} ms x{launch['kernels_per_step']:<4d} "
              f"{launch['outermost_op']} / {launch['op']}")
    print(f"{name}: GPU busy {kernels['gpu_busy']:.0%} of {kernels['wall_ms_per_step']:.1f} ms per profiled step; "
          f"host self time {kernels['host_self_ms_per_step']:.1f} ms per step, costliest:", flush=True)
    for op in kernels["top_host_ops"]:
        print(f"    {op['ms_per_step']:8.3f} ms x{op['calls_per_step']:<4d} {op['name']}")


ALLOCATOR_COUNTS = ("num_device_alloc", "num_device_free", "num_alloc_retries", "num_sync_all_streams")


def allocator_counts(device: torch.device) -> dict | None:
    """The CUDA caching allocator's counters of calls that can leave the GPU idle: whole segments taken from and
    given back to the driver (cudaMalloc; cudaFree synchronizes the device), retries after a failed allocation
    (which free the cache first) and stream syncs. None off CUDA."""
    if device.type != "cuda":
        return None
    stats = torch.cuda.memory_stats(device)
    return {key: stats.get(key, 0) for key in ALLOCATOR_COUNTS}


def counts_since(before: dict | None, device: torch.device) -> dict | None:
    """What the allocator's counters rose by since `before` (an `allocator_counts` reading)."""
    after = allocator_counts(device)
    return None if before is None or after is None else {key: after[key] - before[key] for key in before}


def timed(step, device: torch.device, steps: int) -> float:
    """Seconds for `steps` calls of `step`, synced at both ends, after a full garbage collection."""
    sync(device)
    collect_garbage()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - tic


def issue_steps(timed_steps: int) -> int:
    """How many steps `issue_ms` (and the rate after a profile) take: a quarter of the timed ones, at least 2."""
    return max(timed_steps // 4, 2)


def issue_ms(step, device: torch.device, steps: int) -> float:
    """ms the host takes to issue one step into an idle GPU's empty queue (synced before each step, not after).

    How to read it against the wall time per step: close to it, the GPU waits for the host's launches (what CUDA
    graphs and fewer launches act on), unless the step itself synchronizes (`sync_points`) or the launch queue
    fills because the GPU is the slower side (then the GPU is busy all step, which a `--kernels` profile shows);
    far below it, the GPU is the limit. On a CPU device every op runs as it is issued, so it is the step time."""
    total = 0.0
    for _ in range(steps):
        sync(device)
        tic = time.perf_counter()
        step()
        total += time.perf_counter() - tic
    sync(device)
    return total * 1000 / steps


def sync_points(caught: list, steps: int) -> list[dict]:
    """Warnings of torch's CUDA sync debug mode, one per synchronizing call (.item(), nonzero, a blocking copy),
    counted per step by the Python line that made the call (backward's own calls surface at `backward()`)."""
    where = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    return [{"per_step": n / steps, "at": at} for at, n in where.most_common(8)]


def find_syncs(step, device: torch.device, steps: int) -> list[dict] | None:
    """`steps` calls of `step` under torch.cuda.set_sync_debug_mode("warn"): where they make the host wait."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sync_points(caught, steps)


def plain_loop(net, call, device, batch, image_size, warmup, steps, profile_steps: int = 0) -> tuple[float, dict]:
    """images/s of eps-prediction training steps (q_sample, forward, MSE, backward, fused AdamW), and what the
    CUDA allocator did during the timed steps.

    With `profile_steps`, that many more steps run under torch.profiler after the timed ones (`kernels`:
    `kernel_breakdown`); then as many under the CUDA sync debug mode (`sync_points`), and a quarter of the timed
    steps again (`images_per_s_after_profile`: a lower rate means the profiler left a cost behind)."""
    schedule = NoiseSchedule.linear(1000)
    x0 = torch.rand(batch, 3, image_size, image_size, device=device) * 2 - 1
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, fused=True)
    net.train()

    def step():
        t = torch.randint(0, schedule.T, (batch,), device=device)
        noise = torch.randn_like(x0)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            pred = call(net, schedule.q_sample(x0, t, noise), t)
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    before = allocator_counts(device)
    rate = steps * batch / timed(step, device, steps)
    details = {"allocator_during_timed_steps": counts_since(before, device),
               "wall_ms_per_step": round(batch / rate * 1000, 2),
               "host_issue_ms_per_step": round(issue_ms(step, device, issue_steps(steps)), 2)}
    if not profile_steps:
        return rate, details
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        wall_ms = timed(step, device, profile_steps) * 1000 / profile_steps
    try:  # a GPU call is rare: a fault in reading the profile must not cost the row's timing
        details["kernels"] = kernel_breakdown(prof, profile_steps, wall_ms)
    except Exception as err:  # noqa: BLE001
        print(f"kernel breakdown failed ({type(err).__name__}: {err}); the timing stands", flush=True)
    details["sync_points"] = find_syncs(step, device, profile_steps)
    recheck = issue_steps(steps)
    details["images_per_s_after_profile"] = round(recheck * batch / timed(step, device, recheck), 1)
    return rate, details


def diffusers_net(quick: bool):
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    return UNet2DModel(**(DIFFUSERS_QUICK if quick else DIFFUSERS_CIFAR10))


def our_net(quick: bool) -> torch.nn.Module:
    cfg = compose_config("train", ["experiment=cifar10_ddpm", "paths.output_dir=.", *(QUICK_NET if quick else [])])
    size = 8 if quick else 32
    return build_net(dict(cfg.net), [3, size, size])


# ---------------------------------------------------------------------------------- guidelab-train
class StepTimer(pl.Callback):
    """Times optimizer steps warmup .. warmup + steps (synced), inside the real Trainer."""

    last: "StepTimer | None" = None

    def __init__(self, warmup: int, steps: int, batch: int):
        self.warmup, self.steps, self.batch = warmup, steps, batch
        self.tic = self.images_per_s = self.allocator = self.allocator_before = None
        self.issue_s: list[float] = []  # host issue times of the issue_steps(steps) steps after the timed ones
        StepTimer.last = self

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.warmup + self.steps:  # as `issue_ms`: each from an idle GPU, not synced after
            sync(pl_module.device)
            self.tic = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            collect_garbage()
            self.allocator_before = allocator_counts(pl_module.device)
            self.tic = time.perf_counter()
        elif trainer.global_step == self.warmup + self.steps and self.images_per_s is None:
            sync(pl_module.device)
            self.images_per_s = self.steps * self.batch / (time.perf_counter() - self.tic)
            self.allocator = counts_since(self.allocator_before, pl_module.device)
        elif trainer.global_step > self.warmup + self.steps:
            self.issue_s.append(time.perf_counter() - self.tic)

    def details(self) -> dict:
        wall = None if self.images_per_s is None else round(self.batch / self.images_per_s * 1000, 2)
        issue = round(sum(self.issue_s) * 1000 / len(self.issue_s), 2) if self.issue_s else None
        return {"allocator_during_timed_steps": self.allocator, "wall_ms_per_step": wall,
                "host_issue_ms_per_step": issue}


def ddp_on_current_stream():
    """Lightning's `DDPStrategy._setup_model` builds DistributedDataParallel on a new side stream. The DDP reducer
    keeps each parameter's AccumulateGrad node from then on, so every backward accumulates gradients on that stream:
    torch 2.11 warns on the first backward ("The AccumulateGrad node's stream does not match ... or if you are using
    DDP ..."; the seventeenth session's ddp log) that this may add synchronization, and says to build DDP on the stream
    of the forwards. While this context is open, DDPStrategy builds it on the current stream."""
    from unittest import mock

    from pytorch_lightning.strategies import DDPStrategy
    from torch.nn.parallel import DistributedDataParallel

    def setup_model(self, model):
        return DistributedDataParallel(module=model, device_ids=self.determine_ddp_device_ids(), **self._ddp_kwargs)

    return mock.patch.object(DDPStrategy, "_setup_model", setup_model)


def whole_graph_under_ddp():
    """Dynamo's DDPOptimizer (`torch._dynamo.config.optimize_ddp`, on by default) splits a compiled net under DDP
    into one graph per gradient bucket, so that the all-reduce of a bucket can start while the backward of the graphs
    before it runs; each split is a graph of its own to call and guard. While this context is open, the net compiles
    whole: the all-reduces then start only after its backward."""
    return torch._dynamo.config.patch(optimize_ddp=False)


def recompute_in_inductor():
    """The thresholds FastPath.recompute raises for the guidance gradient (fast_nets.RECOMPUTE_OPTIONS), here for
    the training step: inductor recomputes GroupNorm, FiLM and SiLU inside the backward's kernels instead of
    writing them out in float32 and reading them back. `inductor_codegen.py --recompute` counts 6,911 MB in the
    backward instead of 11,788 MB for the CIFAR-10 preset at batch 128. While this context is open, every
    compile takes them (the backward too: it compiles at the first backward, inside the run)."""
    from guidelab.evaluation.fast_nets import RECOMPUTE_OPTIONS

    return torch._inductor.config.patch(RECOMPUTE_OPTIONS)


def through_train(fast: bool, quick: bool, batch: int, warmup: int, steps: int, compile_mode: str | None,
                  extra: list[str], out: Path, profile: bool = False, trainer: str = "gpu",
                  context=contextlib.nullcontext) -> tuple[float, dict]:
    """images/s of `guidelab-train` steps (StepTimer), and what the CUDA allocator did during them; the run goes
    inside `context()`."""
    size = 8 if quick else 32
    overrides = [
        "experiment=cifar10_ddpm", f"trainer={trainer}", "trainer.devices=1", "data=synthetic", "logger=csv", f"paths.output_dir={out}",
        f"data.batch_size={batch}", f"data.image_size={size}", f"data.num_samples={batch * (warmup + steps + 2) * 2}",
        f"trainer.max_steps={warmup + steps + issue_steps(steps)}", "trainer.max_epochs=-1",
        "trainer.enable_model_summary=false",
        # no sanity validation: it would compile an eval graph (tens of seconds of device time) that no timed step uses
        "+trainer.num_sanity_val_steps=0",
        "+callbacks.timer._target_=__main__.StepTimer", f"+callbacks.timer.warmup={warmup}",
        f"+callbacks.timer.steps={steps}", f"+callbacks.timer.batch={batch}",
        *(QUICK_NET if quick else []),
    ]
    if quick:
        overrides += ["trainer.accelerator=cpu"]
    if not fast:
        overrides += ["task.module.compile=false", "task.module.channels_last=false"]
    elif compile_mode:
        overrides += [f"task.module.compile={compile_mode}"]
    cfg = compose_config("train", [*overrides, *extra])
    with context():
        if profile:
            from torch.profiler import ProfilerActivity, profile as torch_profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            with torch_profile(activities=activities) as prof:
                train(cfg)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        else:
            train(cfg)
    return StepTimer.last.images_per_s, StepTimer.last.details()


# ---------------------------------------------------------------------------------- main
def use_backend(backend: str) -> None:
    """Every nn.Module.compile in this process (ours in the module's setup included) uses `backend`."""
    original = torch.nn.Module.compile

    def compile_with(self, *args, mode=None, **kwargs):
        return original(self, backend=backend)

    torch.nn.Module.compile = compile_with


def set_inductor(settings: list[str]) -> dict:
    """Apply `KEY=VALUE` settings to torch._inductor.config (VALUE a Python literal); unknown keys fail here."""
    import ast

    import torch._inductor.config as inductor_config

    applied = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not hasattr(inductor_config, key):
            raise SystemExit(f"--inductor {setting!r}: expected KEY=VALUE with KEY a torch._inductor.config setting")
        try:
            applied[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            applied[key] = value
        setattr(inductor_config, key, applied[key])
    return applied


def versions(device: torch.device) -> dict:
    """What the figures came from: the fields every guidelab result records, and diffusers."""
    info = software_versions(device)
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    return info


# what issue 11 asks to be measured side by side (its item 2), and the default: graphs' compile comes second, so
# a run cut short still has both targets' first figure (the sixteenth session's rows took 32, 119 and 88 s)
ISSUE_FIGURES = ("diffusers_eager", "ours_train_fast", "diffusers_compiled")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU, tiny nets at 8x8, batch 16, few steps")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 128; --quick 16)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 15; --quick 3)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 40; --quick 5)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default=None,
                        help="torch.compile mode for the compiled rows (default: default) and the ours_train_fast* "
                             "rows (default: the config's compile: auto)")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor; --quick: aot_eager, since inductor's C++ build "
                             "of even a tiny net takes minutes on a small CPU)")
    parser.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                        help="torch._inductor.config setting for every compiled row (repeatable), e.g. "
                             "combo_kernels=True: inductor_codegen.py counts 31%% fewer launches per training step")
    parser.add_argument("--only", nargs="*", default=None,
                        help=f"figure names to run, in this order (default: issue 11's {' '.join(ISSUE_FIGURES)}, "
                             "about 4 minutes on a fresh H100)")
    parser.add_argument("--all", action="store_true", help="every figure, in the order of the list above")
    parser.add_argument("--train-override", action="append", default=[],
                        help="extra Hydra override for the guidelab-train rows (repeatable), e.g. trainer.benchmark=false")
    parser.add_argument("--profile", action="store_true",
                        help="torch.profiler table (by self CPU time) of the ours_train_eager run: host-side overheads")
    parser.add_argument("--kernels", type=int, default=0, metavar="STEPS",
                        help="after timing each plain-loop row, profile STEPS more steps and print GPU ms per step by "
                             "kernel category and the costliest kernels (what separates ours from diffusers)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=False,
                        help="run each figure of --only in a fresh Python process, one after the other: on an H100 "
                             "the process's first compiled net was the one whose GPU waited least (README.md)")
    args = parser.parse_args(argv)
    if args.only is None and not args.all:
        args.only = list(ISSUE_FIGURES)
    quick = args.quick
    batch = args.batch or (16 if quick else 128)
    warmup = args.warmup if args.warmup is not None else (3 if quick else 15)
    steps = args.steps or (5 if quick else 40)
    device = torch.device("cpu" if quick or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not quick:
        parser.error("no CUDA device: the default mode is the GPU benchmark; use --quick on a CPU")
    inductor = set_inductor(args.inductor)
    backend = args.compile_backend or ("aot_eager" if quick else "inductor")
    if backend != "inductor":
        use_backend(backend)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    info = versions(device)
    print(json.dumps({"setup": info, "batch": batch, "warmup": warmup, "steps": steps,
                      "compile_mode": args.compile_mode, "compile_backend": backend, "inductor": inductor}), flush=True)
    rows = []

    def write(complete: bool) -> None:
        if args.json:
            args.json.write_text(json.dumps({"setup": info, "inductor": inductor, "rows": rows, "complete": complete},
                                            indent=2))

    if args.isolate:
        if not args.only:
            parser.error("--isolate runs the figures --only names, each in its own process: name them (not --all)")
        for name in args.only:
            rows.extend(run_isolated(name, sys.argv[1:] if argv is None else list(argv)))
            write(complete=False)
        return report(rows, info, batch, write)

    size = 8 if quick else 32
    ours, theirs = our_net(quick), diffusers_net(quick)
    n_ours = count(ours)
    if theirs is None:
        print("diffusers is not installed (pip install 'guidelab[bench]'): skipping the diffusers rows", flush=True)
    else:
        n_theirs = count(theirs)
        gap = abs(n_ours - n_theirs) / n_theirs
        print(json.dumps({"parameters": {"ours": n_ours, "diffusers": n_theirs, "relative_gap": round(gap, 4)}}))
        if not quick and gap > 0.02:
            raise SystemExit(f"parameter counts differ by {gap:.1%} (> 2%): not a fair comparison")

    def call_diffusers(net, x, t):
        return net(x, t).sample

    def call_ours(net, x, t):
        return net(x, t)

    def record(name, fn):
        fresh_state(device)
        tic = time.perf_counter()
        try:
            value, details = fn()
        except Exception as err:  # noqa: BLE001  a GPU call is rare: one failing row must not cost the others
            traceback.print_exc()
            value, details = None, {"error": f"{type(err).__name__}: {err}"[:400]}
        row = {"figure": name, "images_per_s": None if value is None else round(value, 1),
               "wall_s": round(time.perf_counter() - tic, 1), "batch": batch, "device": info["device"], **details}
        if "kernels" in row:
            print_kernels(name, row["kernels"])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "kernels"}), flush=True)
        write(complete=False)  # after every figure: a run cut short by a time limit keeps what it measured

    def plain(net_factory, call, compiled, channels_last=True):
        net = net_factory().to(device)
        if compiled:
            if channels_last:
                net = net.to(memory_format=torch.channels_last)
            net.compile(mode=args.compile_mode)
        return plain_loop(net, call, device, batch, size, warmup, steps, profile_steps=args.kernels)

    # *_nchw: compiled without channels_last, leaving the layout to inductor (its layout optimisation picks
    # channels_last for the convolutions it judges worth it); a lead from the H200 figures, where ours
    # compiled gained +13% with channels_last against +68% in the issue's own (layout unstated) measurement
    figures = {}  # name -> what measures it, in the default order
    if theirs is not None:
        figures["diffusers_eager"] = lambda: plain(lambda: diffusers_net(quick), call_diffusers, False)
        figures["diffusers_compiled"] = lambda: plain(lambda: diffusers_net(quick), call_diffusers, True)
        figures["diffusers_compiled_nchw"] = lambda: plain(lambda: diffusers_net(quick), call_diffusers, True, False)
    figures["ours_plain_eager"] = lambda: plain(lambda: our_net(quick), call_ours, False)
    figures["ours_plain_compiled"] = lambda: plain(lambda: our_net(quick), call_ours, True)
    figures["ours_plain_compiled_nchw"] = lambda: plain(lambda: our_net(quick), call_ours, True, False)
    nothing = contextlib.nullcontext
    for name, fast, trainer, extra, context in (
            ("ours_train_eager", False, "gpu", [], nothing), ("ours_train_fast", True, "gpu", [], nothing),
            ("ours_train_fast_nchw", True, "gpu", ["task.module.channels_last=false"], nothing),
            ("ours_train_fast_nographs", True, "gpu", ["task.module.compile=default"], nothing),
            ("ours_train_fast_recompute", True, "gpu", [], recompute_in_inductor),
            ("ours_train_fast_ddp1", True, "ddp", [], nothing),
            ("ours_train_fast_ddp1_same_stream", True, "ddp", [], ddp_on_current_stream),
            ("ours_train_fast_ddp1_whole_graph", True, "ddp", [], whole_graph_under_ddp),
            ("ours_train_fast_ddp1_graphs", True, "ddp", ["task.module.compile=reduce-overhead"], nothing)):
        figures[name] = lambda fast=fast, name=name, trainer=trainer, extra=extra, context=context: through_train(
            fast, quick, batch, warmup, steps, args.compile_mode, [*args.train_override, *extra],
            Path(run_dir) / name, profile=args.profile and name == "ours_train_eager", trainer=trainer,
            context=context)
    if args.only is None:  # --all
        args.only = list(figures)
    if theirs is None:  # said above: the diffusers rows are skipped
        args.only = [name for name in args.only if not name.startswith("diffusers_")]
    unknown = [name for name in args.only or [] if name not in figures]
    if unknown:
        raise SystemExit(f"--only {unknown}: no such figure here; choose from {list(figures)}")
    with tempfile.TemporaryDirectory() as run_dir:  # the guidelab-train rows' run folders
        for name in args.only:  # --only's order: the first named run first
            record(name, figures[name])

    return report(rows, info, batch, write)


def run_isolated(name: str, argv: list[str]) -> list[dict]:
    """The rows of figure `name`, measured by this script in a fresh process with the same options."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "rows.json"
        # argparse keeps the last --only, --json and --isolate given, so these override the parent's
        command = [sys.executable, str(Path(__file__).resolve()), *argv, "--no-isolate", "--only", name,
                   "--json", str(out)]
        code = subprocess.run(command, check=False).returncode
        if code:
            print(f"{name}: its process exited with {code}", flush=True)
        return json.loads(out.read_text())["rows"] if out.exists() else []


def report(rows: list[dict], info: dict, batch: int, write) -> list[dict]:
    """The figures as a table and against issue 11's targets; `write` records them as complete."""
    by_name = {r["figure"]: r["images_per_s"] for r in rows if r.get("images_per_s") is not None}
    # issue / wall near 1: the GPU waits for the host's launches; far below 1: the GPU is the limit (README.md)
    width = max([26, *(len(r["figure"]) + 2 for r in rows)])
    print(f"\n{'figure':<{width}}{'images/s':>12}{'wall ms':>10}{'issue ms':>10}{'issue/wall':>12}   "
          f"({info['device']}, torch {info['torch']}, batch {batch})")
    for row in rows:
        rate, wall, issue = row.get("images_per_s"), row.get("wall_ms_per_step"), row.get("host_issue_ms_per_step")
        if rate is None:
            print(f"{row['figure']:<{width}}{'failed':>12}   {row.get('error')}")
            continue
        times = f"{wall:>10.2f}{issue:>10.2f}{issue / wall:>12.2f}" if wall and issue is not None else ""
        print(f"{row['figure']:<{width}}{rate:>12,.1f}{times}")
    for ours in ("ours_train_fast", "ours_train_fast_nchw", "ours_train_fast_nographs"):
        for target, factor in (("diffusers_eager", 2.0), ("diffusers_compiled", 1.2)):
            if target in by_name and ours in by_name:
                print(f"{ours} / {target} = {by_name[ours] / by_name[target]:.2f} (target >= {factor})")
    if "ours_train_fast_recompute" in by_name and "ours_train_fast" in by_name:
        print(f"ours_train_fast_recompute / ours_train_fast = "
              f"{by_name['ours_train_fast_recompute'] / by_name['ours_train_fast']:.2f}")
    # DDP on one device against the same compile mode without DDP: what DDP itself costs per GPU
    for name in by_name:
        if name.startswith("ours_train_fast_ddp1"):
            alone = "ours_train_fast" if name.endswith("_graphs") else "ours_train_fast_nographs"
            if alone in by_name:
                print(f"{name} / {alone} = {by_name[name] / by_name[alone]:.2f} (DDP on one device / no DDP)")
    write(complete=True)
    return rows


if __name__ == "__main__":
    main()
