"""How often a compiled sweep compiles each net, and what that costs in wall time:
- shipped settings (500 samples per scale): chunks cut scale by scale (the order before the seventh session of
  2026-11-26) against chunks that deal the scales out (`_dealt`);
- a count that does not divide (1,500 per scale): near-equal dealt chunks (954 or 955 rows) against chunks padded
  to one shape (`_chunk_rows(pad=True)`, what a compiled sweep does since the eighth session).

    python experiments/benchmarks/sweep_compiles.py            # CPU, digits nets, about 6 minutes
    python experiments/benchmarks/sweep_compiles.py --preset cifar10 --device cuda

One sweep method (classifier guidance, the shipped scales with their w=0 row, at the shipped batch 1,024) on
`fast_path=on` (bf16, channels_last, torch.compile), the nets of guided_sweep.py (random weights), a few DDIM
steps: the wall time is mostly compilation. Each row starts from a cold compiler: dynamo reset, inductor's
on-disk caches off. Graphs are counted with a backend that hands each graph on to inductor. Prints the rows and
writes them as JSON (--out) with device and versions.
"""

from __future__ import annotations

import os

os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"  # before torch is imported: every row compiles from nothing

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import torch  # noqa: E402
from torch._inductor.compile_fx import compile_fx  # noqa: E402
from rich.progress import Progress  # noqa: E402

import guidelab.evaluation.guided_sweep as guided_sweep  # noqa: E402
from guided_sweep import build_nets, environment, settings_from_config  # noqa: E402  (beside this file)
from guidelab.diffusion import ClassifierGuidance, NoiseSchedule  # noqa: E402
from guidelab.evaluation.guidance_methods import SweepMethod  # noqa: E402

_chunk_rows = guided_sweep._chunk_rows
# row: (samples per scale, what replaces a function of guided_sweep for it)
ROWS = {"scale by scale": (500, {"_dealt": lambda scale_index, num_scales: torch.arange(len(scale_index))}),
        "dealt": (500, {}),
        "1,500 per scale, near-equal chunks": (1500, {"_chunk_rows": lambda *args, pad: _chunk_rows(*args, pad=False)}),
        "1,500 per scale, padded to one shape": (1500, {})}


def one_sweep(row: str, preset: str, device, steps: int) -> dict:
    """Graphs compiled per net and wall seconds of one method's sampling, chunked as `row` says."""
    torch._dynamo.reset()
    graphs = {}
    real_compile = torch.compile

    def counting_compile(net, mode=None):
        def backend(gm, example_inputs):
            graphs[type(net).__name__] = graphs.get(type(net).__name__, 0) + 1
            return compile_fx(gm, example_inputs)
        return real_compile(net, backend=backend)

    model, classifier, shape = build_nets(preset, device)
    samples_per_scale, replaced = ROWS[row]
    settings = settings_from_config(steps=steps, fast_path="on", samples_per_scale=samples_per_scale)
    plan = guided_sweep._plan(settings, 10, shape, 0, 1)
    method = SweepMethod("classifier", ClassifierGuidance(classifier, num_classes=10), model)
    with contextlib.ExitStack() as patches, Progress(disable=True) as bar:
        patches.enter_context(mock.patch.object(torch, "compile", counting_compile))
        for name, function in replaced.items():
            patches.enter_context(mock.patch.object(guided_sweep, name, function))
        start = time.perf_counter()
        guided_sweep._sample_method(method, NoiseSchedule.linear(1000), shape, plan, settings, device, bar)
        seconds = time.perf_counter() - start
    return {"graphs": graphs, "seconds": seconds, "samples": len(plan[0]), "batch_size": settings.batch_size}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["digits", "cifar10"], default="digits")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="DDIM steps (sampling time beside the compiles)")
    parser.add_argument("--out", type=Path, default=Path("sweep_compiles.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    record = {"command": " ".join([sys.executable, *sys.argv]), "environment": environment(device),
              "settings": {"preset": args.preset, "steps": args.steps}, "rows": {}}
    for name in ROWS:
        row = record["rows"][name] = one_sweep(name, args.preset, device, args.steps)
        print(f"{name}: graphs compiled {row['graphs']}, {row['seconds']:.1f} s for {row['samples']} samples "
              f"(batch {row['batch_size']}, {args.steps} steps)", flush=True)
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
