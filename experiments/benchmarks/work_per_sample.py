"""What a guided sampling step asks of the hardware, per sample: FLOPs and bytes moved, UNet vs classifier.

    python experiments/benchmarks/work_per_sample.py            # CIFAR-10 presets, on CPU (~1 min on 2 cores)
    python experiments/benchmarks/work_per_sample.py --digits

An unguided step is one UNet forward; a guided one adds the classifier's forward and its backward to the
input (weights frozen). Two lower bounds on guided / unguided follow from the counts:
  - by FLOPs (torch.utils.flop_counter): right when both nets run compute-bound;
  - by bytes: each op's inputs and outputs summed over the eager ops (bf16 autocast, channels_last, as the
    fast path runs), right when both run memory-bound with no fusion. torch.compile fuses the
    elementwise ops into fewer passes, so compiled nets move fewer bytes than counted here, the UNet and
    the classifier alike; convolutions and attention ("conv" and "attention" below) must still read and
    write their tensors.
A measured ratio above both says the classifier's kernels run further from the hardware's limits than the
UNet's (short kernels at its 8x8 and 4x4 levels, launch gaps): README.md reads the H200 figures this way.
`guided_sweep.py` prints the FLOP figures beside its timings.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode


class ByteCounter(TorchDispatchMode):
    """Bytes of every op's tensor inputs and outputs, by kind (views and in-place bookkeeping excluded)."""

    def __init__(self):
        super().__init__()
        self.bytes: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__
        if func.is_view or name.startswith(("detach", "view", "_unsafe_view", "expand", "t.", "alias")):
            return out
        moved = sum(t.numel() * t.element_size() for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor))
        kind = "conv" if "convolution" in name else "attention" if "attention" in name else "other"
        self.bytes[kind] = self.bytes.get(kind, 0) + moved
        return out


def _count(fn, batch: int) -> dict:
    with ByteCounter() as moved:
        fn()
    with FlopCounterMode(display=False) as flops:
        fn()
    return {"gflop": flops.get_total_flops() / batch / 1e9,
            "mib": {k: v / batch / 2**20 for k, v in sorted(moved.bytes.items())},
            "mib_total": sum(moved.bytes.values()) / batch / 2**20}


def work_per_sample(model, classifier, shape, device, batch: int = 2, bf16: bool = False) -> dict:
    """FLOPs and bytes per sample of the UNet's forward and of the classifier's forward + backward to the input,
    and the guided/unguided step ratios they alone would give."""
    x = torch.randn(batch, *shape, device=device)
    t = torch.full((batch,), 500, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)

    def unet():
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x, t)

    def guide():
        x_in = x.clone().requires_grad_(True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = classifier(x_in, t)
        # .backward(): the FLOP counter refuses autograd.grad on a leaf; the same work
        F.log_softmax(logits.float(), dim=-1).gather(1, y[:, None]).sum().backward()

    u, g = _count(unet, batch), _count(guide, batch)
    return {"unet_forward": u, "classifier_forward_backward": g,
            "flop_ideal_guided_over_unguided": 1 + g["gflop"] / u["gflop"],
            "byte_ideal_guided_over_unguided": 1 + g["mib_total"] / u["mib_total"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", action="store_true", help="the digits presets instead of CIFAR-10's")
    parser.add_argument("--fp32", action="store_true", help="count the exact path (fp32, contiguous) instead")
    parser.add_argument("--batch", type=int, default=64,
                        help="samples counted at once (64): the weights' bytes (and autocast's bf16 copies of them) "
                             "are shared by the batch, so small batches overstate the bytes per sample")
    args = parser.parse_args(argv)
    from guided_sweep import build_nets  # beside this file; imported here, as guided_sweep imports this module

    model, classifier, shape = build_nets("digits" if args.digits else "cifar10", "cpu")
    if not args.fp32:
        model, classifier = (net.to(memory_format=torch.channels_last) for net in (model, classifier))
    work = work_per_sample(model, classifier, shape, "cpu", batch=args.batch, bf16=not args.fp32)
    for name in ("unet_forward", "classifier_forward_backward"):
        part = work[name]
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in part["mib"].items())
        print(f"{name:28s} {part['gflop']:7.3f} GFLOP  {part['mib_total']:7.1f} MiB moved ({kinds})")
    print(f"guided / unguided if compute-bound {work['flop_ideal_guided_over_unguided']:.2f}, "
          f"if memory-bound {work['byte_ideal_guided_over_unguided']:.2f}")
    print(json.dumps(work))
    return work


if __name__ == "__main__":
    main()
