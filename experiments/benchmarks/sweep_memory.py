"""Where guided sampling's memory goes, measured on CPU: peak bytes of live tensors per part of a step.

    python experiments/benchmarks/sweep_memory.py --batch 16

A dispatch mode counts every tensor storage an op creates until it is freed (weights, which exist before,
are not counted), so the peak is what a step adds on top of the nets; per-sample figures scale linearly
with the batch (checked: 8 vs 16). CIFAR-10 preset UNet + encoder_cifar10 classifier, random weights.
"""

from __future__ import annotations

import argparse
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guided_sweep import build_nets, run_sweep, settings_from_config, textbook_sample  # noqa: E402

from guidelab.diffusion import NoiseSchedule  # noqa: E402
from guidelab.diffusion.guidance import classifier_grad  # noqa: E402


class LiveTensorPeak(TorchDispatchMode):
    """Peak total bytes of the storages created inside the block and still alive."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.sizes = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage):
        key = storage.data_ptr()
        if key in self.sizes or storage.nbytes() == 0:
            return
        self.sizes[key] = storage.nbytes()
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key):
        self.live -= self.sizes.pop(key, 0)


def peak_mib(fn) -> float:
    meter = LiveTensorPeak()
    with meter:
        fn()
    return meter.peak / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    batch = args.batch
    model, classifier, shape = build_nets("cifar10", torch.device("cpu"))
    x = torch.randn(batch, *shape)
    t = torch.full((batch,), 500)
    y = torch.zeros(batch, dtype=torch.long)
    schedule = NoiseSchedule.linear(1000)
    parts = {}
    with torch.no_grad():
        parts["UNet forward (no_grad), fp32"] = peak_mib(lambda: model(x, t))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            parts["UNet forward (no_grad), bf16 autocast"] = peak_mib(lambda: model(x, t))
        parts["classifier gradient, fp32, weights frozen"] = peak_mib(lambda: classifier_grad(classifier, x, t, y))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            parts["classifier gradient, bf16 autocast, weights frozen"] = peak_mib(
                lambda: classifier_grad(classifier, x, t, y))
        classifier.requires_grad_(True)
        parts["classifier gradient, fp32, weights trainable"] = peak_mib(lambda: classifier_grad(classifier, x, t, y))
        classifier.requires_grad_(False)
    respaced = schedule.respace(2)
    parts["textbook loop, 2 steps, one scale"] = peak_mib(
        lambda: textbook_sample(model, classifier, respaced, (batch, *shape), 0, 1.0, torch.device("cpu")))
    for path in ("off", "eager"):
        if path == "eager":  # the fast path moves weights to channels_last once; do it here, outside the count
            model.to(memory_format=torch.channels_last)
            classifier.to(memory_format=torch.channels_last)
        chosen = settings_from_config(scales=[0.0, 1.0], samples_per_scale=batch // 2, batch_size=batch, steps=2,
                                      fast_path=path)
        parts[f"run_guided_sweep, 2 steps, w in (0, 1), fast_path={path}"] = peak_mib(
            lambda: run_sweep(model, classifier, schedule, shape, chosen, torch.device("cpu")))
    print(f"{'part (CPU, live tensors)':62s} {'MiB @' + str(batch):>10s} {'MiB/sample':>11s} {'GiB @1024':>10s}")
    for name, mib in parts.items():
        print(f"{name:62s} {mib:10.1f} {mib / batch:11.2f} {mib / batch * 1024 / 1024:10.2f}")


if __name__ == "__main__":
    main()
