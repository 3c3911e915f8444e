"""The fast path for sampling: networks in bf16 autocast, channels_last and torch.compile, math in fp32.

Only the networks change: each is wrapped so that it runs under bf16 autocast and hands back float32,
so the guidance gradient (taken w.r.t. a float32 x_t, log-softmax in float32), the scale arithmetic and
the sampler's update all stay in float32. On by default on CUDA; on CPU the default is the exact path
(float32, eager). `tests/test_fast_path.py` bounds what bf16 changes on the analytic oracle.

`recompute` (not yet in any mode: the GPU timing is pending) compiles the calls that take a gradient, the
classifier's forward and backward to x_t, with inductor's thresholds for materialising an intermediate raised
(RECOMPUTE_OPTIONS), so its kernels recompute GroupNorm, FiLM and SiLU from the saved bf16 input instead of
writing them out in float32 and reading them back (`experiments/benchmarks/README.md`, "Recompute in the
classifier's backward").

`graphs` adds CUDA graphs (torch.compile's "reduce-overhead" mode): a replay launches a whole forward (or
the classifier's backward) at once, which pays where kernels are short, as in the small classifier's 8x8
and 4x4 levels, and costs a recording per new batch shape. A replay writes its outputs into memory the
next replay reuses, so the wrapper hands back copies (the eps and the input gradient: one image-sized copy
each per step).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn

from guidelab.diffusion import Guidance
from guidelab.diffusion.guidance.base import class_count

__all__ = ["FastPath", "FAST_PATH_CHOICES", "RECOMPUTE_OPTIONS", "FastNet", "with_fast_nets"]

FAST_PATH_CHOICES = ("auto", "on", "graphs", "off", "eager")
# Inductor materialises an intermediate that several kernels read once it reads more than 4 buffers, holds more
# than 30 ops, or accumulates more than 8 reads (its defaults). In the classifier's backward that writes the
# recomputed GroupNorm-FiLM-SiLU chain and the norm's input gradient in float32 and reads them back: raised
# here, the compiled backward of the CIFAR-10 classifier moves 4,009 MB instead of 7,834 MB at batch 512, in
# 110 launches instead of 180 (inductor_codegen.py --step sampling --recompute, lowered for an H100 on CPU).
RECOMPUTE_OPTIONS = {"realize_reads_threshold": 32, "realize_opcount_threshold": 200,
                     "realize_acc_reads_threshold": 32}


@dataclass(frozen=True)
class FastPath:
    """How the nets run: `bf16` autocast, `channels_last` memory format, `compile` (torch.compile),
    `cuda_graphs` (compiled in "reduce-overhead" mode; on CPU that mode compiles without graphs), and
    `recompute` (calls that take a gradient compiled with RECOMPUTE_OPTIONS)."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    recompute: bool = False

    def __post_init__(self):
        if self.cuda_graphs and not self.compile:
            raise ValueError("cuda_graphs needs compile=True: the graphs are torch.compile's 'reduce-overhead' mode")
        if self.recompute and not self.compile:
            raise ValueError("recompute needs compile=True: it sets options of torch.compile's inductor")

    @classmethod
    def choose(cls, mode: str, device) -> "FastPath":
        """auto: everything but CUDA graphs on CUDA, exact elsewhere; on: bf16 + channels_last + compile;
        graphs: on + CUDA graphs (on an H100, 5% more samples/s than on in a guided sweep); eager: bf16 +
        channels_last without compile (no warm-up; on an H100 and an H200 it sampled at 0.43x and 0.68x the speed
        of off, experiments/benchmarks/README.md); off: float32 eager."""
        if mode not in FAST_PATH_CHOICES:
            raise ValueError(f"fast_path must be one of {list(FAST_PATH_CHOICES)}, got {mode!r}")
        if mode == "auto":
            mode = "on" if torch.device(device).type == "cuda" else "off"
        return cls(bf16=mode != "off", channels_last=mode != "off", compile=mode in ("on", "graphs"),
                   cuda_graphs=mode == "graphs")

    @property
    def exact(self) -> bool:
        return not (self.bf16 or self.channels_last or self.compile)

    @property
    def compile_mode(self) -> str:
        return "reduce-overhead" if self.cuda_graphs else "default"

    @contextlib.contextmanager
    def sampling(self, device):
        """What holds while sampling on this path; each setting comes back after.

        - Without compile (off, eager), every net runs eagerly, also one compiled elsewhere: the callback's
          classifier is compiled in place for training, on one GPU with CUDA graphs, and under off it would
          otherwise run that compiled code and hand back its input gradient in the graphs' memory
          (`torch.compiler.set_stance("force_eager")`).
        - On CUDA off the exact path, cuDNN benchmarks its convolution algorithms for each new shape (the
          sweep's batches repeat a few shapes) and keeps the fastest. The exact path keeps the user's setting, so
          it stays what a hand-written loop gets."""
        with contextlib.ExitStack() as settings:
            if not self.compile:
                settings.enter_context(torch.compiler.set_stance("force_eager"))
            if not self.exact and torch.device(device).type == "cuda":
                settings.callback(setattr, torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
                torch.backends.cudnn.benchmark = True
            yield

    def wrap(self, net, *, convert_weights: bool = True):
        """`net` as it runs on this path (the net itself when exact). Weights are shared, not copied;
        with channels_last and `convert_weights` the net's parameters move to channels_last in place
        (values unchanged; pass False for a net that is being trained, whose optimizer state must keep
        its layout)."""
        if net is None or self.exact:
            return net
        return FastNet(net, self, convert_weights=convert_weights)

    def describe(self) -> dict:
        return {"bf16": self.bf16, "channels_last": self.channels_last, "compile": self.compile,
                "cuda_graphs": self.cuda_graphs, "recompute": self.recompute}


class FastNet(nn.Module):
    """net(x, *args) on a FastPath: bf16 autocast and channels_last input when asked, compiled when asked;
    returns float32 and keeps the net's `num_classes`. With `recompute`, a call that takes a gradient w.r.t. x
    runs a second compilation of the net, with RECOMPUTE_OPTIONS (a net sampled only one way compiles once)."""

    def __init__(self, net, path: FastPath, *, convert_weights: bool = True):
        super().__init__()
        self.inner = net
        self.path = path
        if class_count(net) is not None:  # what guidance objects read to check targets
            self.num_classes = class_count(net)
        if path.channels_last and convert_weights and isinstance(net, nn.Module):
            net.to(memory_format=torch.channels_last)
        self._run = torch.compile(net, mode=path.compile_mode) if path.compile else net
        self._run_for_grad = self._run
        if path.recompute:  # torch.compile takes a mode or options, not both: the mode's own options, then ours
            from torch._inductor import list_mode_options

            self._run_for_grad = torch.compile(net, options={**list_mode_options(path.compile_mode),
                                                             **RECOMPUTE_OPTIONS})

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.path.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        takes_grad = x.requires_grad and torch.is_grad_enabled()
        if self.path.cuda_graphs and takes_grad:
            x = _CopyGradient.apply(x)  # the input gradient leaves the graph's memory before the next replay
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.path.bf16):
            out = (self._run_for_grad if takes_grad else self._run)(x, *args, **kwargs)
        result = out.float().contiguous()
        if self.path.cuda_graphs and result is out:  # already float32 and contiguous: still the graph's memory
            result = result.clone()
        return result


class _CopyGradient(torch.autograd.Function):
    """Identity whose backward hands on a copy of the incoming gradient (see the module docstring)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.clone()


def with_fast_nets(owners, path: FastPath, trainable=frozenset()):
    """`owners` (eps-models and guidance objects) with every net they hold running on `path`: guidance objects
    are shallow copies whose nets (and inner / part guidances) are replaced; a net held twice is wrapped once
    (so compiled once). Nets whose id is in `trainable` keep their weight layout (see FastPath.wrap)."""
    if path.exact:
        return owners
    done = {}

    def convert(item):
        if id(item) in done:
            return done[id(item)]
        if isinstance(item, nn.Module):
            done[id(item)] = path.wrap(item, convert_weights=id(item) not in trainable)
        elif isinstance(item, Guidance):
            clone = copy.copy(item)
            done[id(item)] = clone
            for name, value in vars(item).items():
                if isinstance(value, (list, tuple)):
                    setattr(clone, name, type(value)(convert(v) for v in value))
                else:
                    setattr(clone, name, convert(value))
        else:
            return item
        return done[id(item)]

    return type(owners)(convert(owner) for owner in owners)
