"""The training step of the CIFAR-10 preset UNet stays CUDA-graph-able (`task.module.compile=reduce-overhead`),
checked without a GPU: `inductor_codegen.py --cudagraphs` lowers the step for a fake H100 as that mode does.

If the net mutated its input in place or took a non-tensor input, cudagraph trees would skip the graphs and
say so only in a log line on the GPU, and the graphs row of the benchmark would time the plain compiled step (an
in-place `x.mul_(1.0)` in UNet.forward fails this test). If the weights stopped being static inputs, every
replay would copy all of them. A CPU tensor in the net is not seen here: the tool moves every graph to the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "inductor_codegen.py"


@pytest.mark.slow
def test_each_replay_copies_only_the_step_inputs(tmp_path):
    pytest.importorskip("triton", reason="inductor_codegen.py writes Triton kernels for the fake GPU")
    out = tmp_path / "plan.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    subprocess.run([sys.executable, str(TOOL), "--nets", "ours", "--cudagraphs", "--json", str(out)],
                   check=True, env=env, capture_output=True, timeout=900)
    ours = json.loads(out.read_text())["nets"]["ours"]
    forward, backward = ours["forward"], ours["backward"]
    for graph in (forward, backward):
        plan = graph["cuda_graphs"]
        assert plan["graphs_kept"], plan["skip_reasons"]
        assert graph["graph_partitions"] == 1  # the whole graph is one CUDA graph: no eager op splits it
        assert graph["launches_total"] > 100  # the inventory read the partitioned code, not an empty call()
    # forward: the noisy images (fp32, as q_sample makes them) and the timesteps; the weights are static
    assert forward["cuda_graphs"]["copied_per_replay"] == ["[128, 3, 32, 32] float32", "[128] int64"]
    assert forward["cuda_graphs"]["static_inputs"] == forward["cuda_graphs"]["tensor_inputs"] - 2
    # backward: only the incoming gradient of the net's (bf16) output; saved activations live in the graph's pool
    assert backward["cuda_graphs"]["copied_per_replay"] == ["[128, 3, 32, 32] bfloat16"]
