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

A third count, the fusion floor (`fusion_floor`), is the least traffic any compiler could reach with the
convolutions, matmuls and attention left to library kernels (cuDNN, cuBLAS, flash attention), as inductor
leaves them: what those kernels read and write, plus each tensor they exchange with fused code crossing memory
once, or once per phase when fused code reads it on both sides of a library kernel. It prices everything
else at zero (perfect fusion, recompute for free, norms' statistics in registers), so compiled code moves at
least this much; inductor_codegen.py counts what it does move.
"""

from __future__ import annotations

import argparse
import json
import operator

import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from guidelab.diffusion.guidance.classifier import classifier_grad
from guidelab.evaluation.fast_nets import FastPath


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


# Ops a compiler leaves to library kernels (inductor calls cuDNN, cuBLAS and flash attention for these).
LIBRARY_OPS = {"convolution", "convolution_backward", "mm", "addmm", "bmm", "baddbmm"}  # and *attention*
VIEW_OPS = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "unsqueeze", "squeeze",
            "alias", "detach", "split", "split_with_sizes", "unbind", "slice", "select", "as_strided"}
FLOOR_BATCH = 512  # as guided_sweep.py times a step and inductor_codegen.py lowers one; traced, not run


def fusion_floor(fn, *args) -> dict:
    """Bytes `fn(*args)` moves at least with its library ops (LIBRARY_OPS, attention) as separate kernels.

    Traced to aten ops (make_fx on fake tensors: nothing runs). Then:
      - a library op reads its inputs and writes its outputs;
      - a value computed by other ops ("fused code") and read by a library op, or returned, is written once;
      - a value in memory (an input, a library op's output) read by fused code is read once per phase: two
        readers are in different phases when a path leads from one through a library op to the other, so no
        kernel can hold both; the count is the longest such chain of its readers;
      - everything else is free: intermediates of fused code, reductions, recompute. Values computed from the
        weights alone (autocast's bf16 copies) are free too, as they could be cached.
    So this is a lower bound for compiled code that leaves those ops to libraries, not a prediction."""
    nodes = list(make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)(*args).graph.nodes)
    kind, base = {}, {}  # kind: input / weight / view / library / fused / output; base: the value a view reads
    for node in nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            kind[node] = {"placeholder": "input", "get_attr": "weight", "output": "output"}[node.op]
            base[node] = node
        elif node.target is operator.getitem:  # one output of a multi-output op, or a piece of a split view
            source = node.args[0]
            kind[node] = kind[source]
            base[node] = base[source] if kind[source] == "view" else node
        elif _op_name(node) in VIEW_OPS or getattr(node.target, "is_view", False):
            kind[node], base[node] = "view", base[node.args[0]]
        elif _op_name(node) in LIBRARY_OPS or "attention" in _op_name(node):
            kind[node], base[node] = "library", node
        else:
            kind[node], base[node] = "fused", node
    position = {node: i for i, node in enumerate(nodes)}
    ancestors, behind_library, from_input = {}, {}, {}  # bitsets over positions; from_input: depends on an input
    for node in nodes:
        ancestry, behind = 1 << position[node], 0
        for parent in node.all_input_nodes:
            ancestry |= ancestors[parent]
            behind |= behind_library[parent] | (ancestors[parent] if kind[parent] == "library" else 0)
        ancestors[node], behind_library[node] = ancestry, behind
        from_input[node] = kind[node] == "input" or any(from_input[p] for p in node.all_input_nodes)
    library = read = 0
    to_write = {base[p] for p in nodes[-1].all_input_nodes if kind[base[p]] == "fused"}  # returned fused values
    readers = {}  # value in memory -> the fused ops that read it
    for node in nodes:
        if node.target is operator.getitem or kind[node] not in ("library", "fused"):
            continue
        if kind[node] == "library":
            operands = _library_reads(node)
            library += sum(min(_nbytes(p), _nbytes(base[p])) for p in operands) + _nbytes(node)
            to_write |= {base[p] for p in operands if kind[base[p]] == "fused" and from_input[base[p]]}
        elif from_input[node]:
            for parent in node.all_input_nodes:
                if kind[base[parent]] in ("input", "weight", "library"):
                    readers.setdefault(base[parent], set()).add(node)
    for value, users in readers.items():
        chain = {}
        for user in sorted(users, key=position.get):  # longest chain of readers in separate phases
            chain[user] = 1 + max((chain[u] for u in chain if behind_library[user] >> position[u] & 1), default=0)
        read += max(chain.values()) * _nbytes(value)
    written = sum(_nbytes(value) for value in to_write)
    return {"library_ops": library, "fused_writes": written, "fused_reads": read, "total": library + written + read}


def _library_reads(node) -> list:
    """The tensors a library op reads. A convolution's backward reads the layer's input only for the weight's
    gradient and the weight only for the input's: the output mask (its last argument) says which it computes."""
    if _op_name(node) != "convolution_backward":
        return node.all_input_nodes
    grad_output, layer_input, weight = node.args[:3]
    mask = node.args[-1]
    return [grad_output] + ([weight] if mask[0] else []) + ([layer_input] if mask[1] else [])


def _op_name(node) -> str:
    packet = getattr(node.target, "_overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(node.target, "__name__", str(node.target))


def _nbytes(node) -> int:
    """Bytes of a traced node's value; for a multi-output op, of all its tensors."""
    return sum(t.numel() * t.element_size() for t in tree_leaves(node.meta.get("val")) if isinstance(t, torch.Tensor))


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


def floor_per_sample(model, classifier, shape, bf16: bool = True, batch: int = FLOOR_BATCH) -> dict:
    """fusion_floor of the UNet's forward and of the classifier's gradient, in MB (10^6 bytes, as
    inductor_codegen.py counts) per sample, and the guided/unguided ratio if both ran at their floors.

    The nets run as FastNet runs them (bf16 autocast, channels_last, float32 out) and the gradient is
    `classifier_grad`'s. Traced with CPU autocast, which keeps GroupNorm in bf16 where CUDA autocast computes
    it in float32: fused code either way, between the same bf16 tensors in memory. (Traced with the float32
    norm, the classifier's floor is 4% lower: the backward's norm then reads the forward's float32 copy of its
    input, a fused value this count does not charge again.)"""
    x = torch.randn(batch, *shape)
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.full((batch,), 500)
    y = torch.zeros(batch, dtype=torch.long)

    path = FastPath(bf16=bf16, channels_last=bf16)  # the fast path's nets without compile: what it compiles
    fast_model, fast_classifier = (path.wrap(net, convert_weights=False) for net in (model, classifier))

    def unet(x, t):
        with torch.no_grad():
            return fast_model(x, t)

    def guide(x, t, y):  # the guidance gradient as ClassifierGuidance takes it
        return classifier_grad(fast_classifier, x, t, y, check=False)[0]

    u, g = fusion_floor(unet, x, t), fusion_floor(guide, x, t, y)

    def per_sample(counts):
        return {k: v / batch / 1e6 for k, v in counts.items()}

    return {"unet_forward_mb": per_sample(u), "classifier_gradient_mb": per_sample(g),
            "guided_over_unguided_at_floors": 1 + g["total"] / u["total"]}


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
    floor = floor_per_sample(model, classifier, shape, bf16=not args.fp32)
    for name in ("unet_forward_mb", "classifier_gradient_mb"):
        part = floor[name]
        print(f"{name[:-3]:28s} fusion floor {part['total']:6.2f} MB per sample (library ops "
              f"{part['library_ops']:.2f}, fused writes {part['fused_writes']:.2f}, fused reads {part['fused_reads']:.2f}; "
              f"batch {FLOOR_BATCH})")
    print(f"guided / unguided with both nets at their fusion floors {floor['guided_over_unguided_at_floors']:.2f}")
    work["fusion_floor"] = floor
    print(json.dumps(work))
    return work


if __name__ == "__main__":
    main()
