"""How many graphs torch.compile makes of a net under DistributedDataParallel, on CPU.

    python experiments/benchmarks/ddp_graphs.py                    # the CIFAR-10 preset, 25 MB buckets (DDP's default)
    python experiments/benchmarks/ddp_graphs.py --whole            # torch._dynamo.config.optimize_ddp=False
    python experiments/benchmarks/ddp_graphs.py --quick --bucket-mb 1    # the digits-sized net, cut in two

Under DDP, dynamo's DDPOptimizer cuts a compiled net into one graph per gradient bucket, so that a bucket's
all-reduce can start while the backward of the graphs before it still runs. Each piece is then called, guarded and
differentiated as a graph of its own, and nothing fuses across a cut: one suspect for the host time DDP adds per
step on a GPU (README.md, "GPU tests and DDP on one GPU"). This script builds the net as `guidelab-train` does
(`net.compile()` inside, DDP outside; one process, gloo), runs one forward and backward with a backend that only
counts what dynamo hands it, and prints the graphs with their node counts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import our_net  # noqa: E402  beside this file: the preset net its guidelab-train rows train


class Caller(torch.nn.Module):
    """What DDP wraps in training: a module whose forward calls the compiled net."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_graphs(quick: bool, whole: bool, bucket_mb: float) -> list[int]:
    """Node counts of the graphs dynamo compiles for one forward of the preset net under DDP."""
    size = 8 if quick else 32
    net = our_net(quick)
    graphs: list[int] = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(sum(node.op in ("call_module", "call_function", "call_method") for node in gm.graph.nodes))
        return gm.forward

    started = not dist.is_initialized()
    if started:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(free_port())
        dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        torch._dynamo.reset()
        with torch._dynamo.config.patch(optimize_ddp=not whole):
            net.compile(backend=counting_backend)
            ddp = torch.nn.parallel.DistributedDataParallel(Caller(net), bucket_cap_mb=bucket_mb,
                                                            gradient_as_bucket_view=True)
            x = torch.randn(1, 3, size, size)
            ddp(x, torch.randint(0, 1000, (1,))).square().mean().backward()
    finally:
        if started:
            dist.destroy_process_group()
    return graphs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the digits-sized stand-in of the preset, at 8x8")
    parser.add_argument("--whole", action="store_true", help="torch._dynamo.config.optimize_ddp=False: no cuts")
    parser.add_argument("--bucket-mb", type=float, default=25.0,
                        help="DDP's bucket_cap_mb (default 25, DDP's own); at least 1, the size of DDP's first bucket, "
                             "which DDPOptimizer requires to be the smallest")
    args = parser.parse_args(argv)
    if args.bucket_mb < 1:
        parser.error(f"--bucket-mb {args.bucket_mb}: DDPOptimizer needs buckets of at least DDP's first, 1 MB")
    graphs = count_graphs(args.quick, args.whole, args.bucket_mb)
    result = {"optimize_ddp": not args.whole, "bucket_mb": args.bucket_mb, "graphs": len(graphs),
              "nodes_per_graph": graphs, "torch": torch.__version__}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
