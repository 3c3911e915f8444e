"""The fast path for sampling: networks in bf16 autocast, channels_last and torch.compile, math in fp32.

Only the networks change: each is wrapped so that it runs under bf16 autocast and hands back float32,
so the guidance gradient (taken w.r.t. a float32 x_t, log-softmax in float32), the scale arithmetic and
the sampler's update all stay in float32. On by default on CUDA; on CPU the default is the exact path
(float32, eager). `tests/test_fast_path.py` bounds what bf16 changes on the analytic oracle.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from guidelab.diffusion import Guidance
from guidelab.diffusion.guidance.base import class_count

__all__ = ["FastPath", "FAST_PATH_CHOICES", "FastNet", "with_fast_nets"]

FAST_PATH_CHOICES = ("auto", "on", "off", "eager")


@dataclass(frozen=True)
class FastPath:
    """How the nets run: `bf16` autocast, `channels_last` memory format, `compile` (torch.compile)."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def choose(cls, mode: str, device) -> "FastPath":
        """auto: everything on CUDA, exact elsewhere; on: everything; eager: bf16 + channels_last without
        compile (no warm-up); off: float32 eager."""
        if mode not in FAST_PATH_CHOICES:
            raise ValueError(f"fast_path must be one of {list(FAST_PATH_CHOICES)}, got {mode!r}")
        if mode == "auto":
            mode = "on" if torch.device(device).type == "cuda" else "off"
        return cls(bf16=mode != "off", channels_last=mode != "off", compile=mode == "on")

    @property
    def exact(self) -> bool:
        return not (self.bf16 or self.channels_last or self.compile)

    def wrap(self, net, *, convert_weights: bool = True):
        """`net` as it runs on this path (the net itself when exact). Weights are shared, not copied;
        with channels_last and `convert_weights` the net's parameters move to channels_last in place
        (values unchanged; pass False for a net that is being trained, whose optimizer state must keep
        its layout)."""
        if net is None or self.exact:
            return net
        return FastNet(net, self, convert_weights=convert_weights)

    def describe(self) -> dict:
        return {"bf16": self.bf16, "channels_last": self.channels_last, "compile": self.compile}


class FastNet(nn.Module):
    """net(x, *args) on a FastPath: bf16 autocast and channels_last input when asked, compiled when asked;
    returns float32 and keeps the net's `num_classes`."""

    def __init__(self, net, path: FastPath, *, convert_weights: bool = True):
        super().__init__()
        self.inner = net
        self.path = path
        if class_count(net) is not None:  # what guidance objects read to check targets
            self.num_classes = class_count(net)
        if path.channels_last and convert_weights and isinstance(net, nn.Module):
            net.to(memory_format=torch.channels_last)
        self._run = torch.compile(net) if path.compile else net

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.path.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.path.bf16):
            out = self._run(x, *args, **kwargs)
        return out.float().contiguous()


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
