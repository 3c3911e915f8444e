"""Two pieces of one guided step at once: the guide's work on a second CUDA stream, the eps-model's on the current one.

A guided step runs the eps-model's forward and the guide's forward + backward, which read the same x_t and
nothing of each other. Issued on one stream they run one after the other; on two the GPU may overlap them,
which pays where neither fills the GPU alone (a small classifier's short kernels beside the UNet's). The
values are those of the sequential order: each stream runs its kernels in the same order as before, and the
current stream waits for the side stream before anything reads the guide's results. Off CUDA this is the
sequential call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils._pytree import tree_leaves

__all__ = ["concurrently"]

A = TypeVar("A")
B = TypeVar("B")

_side_streams: dict[torch.device, torch.cuda.Stream] = {}


def concurrently(main_work: Callable[[], A], side_work: Callable[[], B], device) -> tuple[A, B]:
    """(main_work(), side_work()), side_work's kernels on a side stream of `device` when it is a CUDA device.

    The side stream first waits for the current one (x_t is written there), side_work is issued first (its
    kernels queue while the host issues main_work's), and the current stream then waits for the side stream.
    Tensors side_work returns are marked as used on the current stream, so the caching allocator does not hand
    their memory to the side stream while the current one may still read them."""
    device = torch.device(device)
    if device.type != "cuda":
        return main_work(), side_work()
    main = torch.cuda.current_stream(device)
    side = _side_streams.get(device)
    if side is None:
        side = _side_streams[device] = torch.cuda.Stream(device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        side_out = side_work()
    main_out = main_work()
    main.wait_stream(side)
    for leaf in tree_leaves(side_out):
        if isinstance(leaf, torch.Tensor) and leaf.is_cuda:
            leaf.record_stream(main)
    return main_out, side_out
