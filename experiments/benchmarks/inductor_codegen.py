"""What torch.compile generates for a GPU step of each net, read on a machine without a GPU.

    python experiments/benchmarks/inductor_codegen.py                  # training: ours vs diffusers (~4 min)
    python experiments/benchmarks/inductor_codegen.py --nets ours --dropout 0.0 --layout nchw --combo-kernels
    python experiments/benchmarks/inductor_codegen.py --step sampling  # guided step: UNet vs classifier (~2 min)
    python experiments/benchmarks/inductor_codegen.py --step sampling --norm-output input  # GroupNorm returning bf16
    python experiments/benchmarks/inductor_codegen.py --step sampling --recompute  # the fast path's `recompute`
    python experiments/benchmarks/inductor_codegen.py --nets ours --cudagraphs   # what reduce-overhead's graphs do

Questions it answers:
- Issue 11: on the H200 our UNet gained +13% from torch.compile where diffusers' UNet2DModel gained +74%,
  with the same FLOPs. Is the difference in the code inductor writes, as more kernels or as fused kernels
  that move more bytes?
- Issue 12: what does a guided step's classifier gradient ask for, next to the UNet's forward?
- Both (`--cudagraphs`): does inductor keep CUDA graphs (`compile=reduce-overhead`) for every graph of the step,
  or skip them (its reasons, e.g. mutated or non-tensor inputs; CPU tensors are not seen, see `cuda_graph_plan`),
  and which inputs does each replay copy into the graph's static buffers? A skip costs a GPU session its graphs
  row without an error.

What it does:
- Compiles the step as the fast path does (bf16 autocast, channels_last):
  - training: the net's forward and backward, as `nn.Module.compile` compiles them;
  - sampling: the UNet's forward under no_grad, and the classifier's forward and backward to its input,
    weights frozen.
- Lowers every graph with inductor for an H100 (sm_90) target, without running it.
- Counts what each generated `call()` launches:
  - Triton kernels by kind (pointwise, persistent reduction, looped reduction), with the bytes each reads and
    writes (inductor's static count);
  - extern kernels: cuDNN convolutions, matmuls, attention;
  - and the memory layout of every convolution's operands (a mixed layout costs conversions inside cuDNN).
- It does not time anything: timing needs the GPU (`train_throughput.py --kernels`).

How it works without a GPU. Neither autograd nor Triton can touch CUDA without a driver, so it patches
private torch internals. Checked with torch 2.14.1 and triton 3.8.0; other versions may need the patches
in `fake_h100` adjusted.
- Dynamo and AOT autograd trace the step on CPU tensors.
- Each graph inductor partitions out is moved to "cuda": device arguments rewritten, fake CUDA inputs with
  the same strides. Inductor's real CUDA path then lowers it, with an H100's device properties and Triton's
  sm_90 backend. The kernels are written, not compiled or run.
- Four emulations:
  - group_norm runs in float32, as CUDA autocast does (CPU autocast does not);
  - attention is an opaque op with flash attention's interface, output and logsumexp saved for backward.
    SDPA's backend choice cannot see a fake GPU; on the GPU it picks flash attention for both nets;
  - convolutions take cuDNN's layout rule (channels_last when the input or the weight is), which the CPU
    rule does not match;
  - inductor's constant folding is off, since it would run ops on the device.
- Nothing else is changed.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F



# ----------------------------------------------------------------------------------------- a fake H100
def fake_h100() -> None:
    """Patch this process so that inductor lowers CUDA graphs for an sm_90 target without a driver."""
    props = types.SimpleNamespace(
        name="NVIDIA H100 80GB HBM3 (fake)", major=9, minor=0, multi_processor_count=132, total_memory=80 * 2**30,
        max_threads_per_multi_processor=2048, warp_size=32, regs_per_multiprocessor=65536,
        shared_memory_per_block_optin=232448, shared_memory_per_multiprocessor=233472, max_threads_per_block=1024,
        L2_cache_size=50 * 2**20, gcnArchName="", uuid="fake", clock_rate=1980000, memory_clock_rate=2619000,
        memory_bus_width=5120, is_integrated=False, is_multi_gpu_board=False, pci_bus_id=0, pci_device_id=0,
        pci_domain_id=0)
    torch.cuda.get_device_properties = lambda device=None: props
    torch.cuda.get_device_capability = lambda device=None: (9, 0)
    torch.cuda.get_device_name = lambda device=None: props.name
    torch.cuda.current_device = lambda: 0
    torch.cuda.is_bf16_supported = lambda *args, **kwargs: True
    torch.cuda.get_rng_state = lambda device="cuda": torch.zeros(16, dtype=torch.uint8)  # dynamo saves and restores it
    torch.cuda.set_rng_state = lambda state, device="cuda": None
    # imported after the patches above: some of these bind torch.cuda's functions when first imported
    import torch._inductor.async_compile as async_compile
    import torch._inductor.config as inductor_config
    import torch._inductor.scheduler as scheduler
    import torch.cuda.amp.common as amp_common
    import torch.utils._triton as triton_utils
    from torch._prims_common import suggest_memory_format
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    amp_common.amp_definitely_not_available = lambda: False  # else autocast("cuda") turns itself off
    scheduler.has_triton = triton_utils.has_triton = lambda: True
    backend = make_backend(GPUTarget("cuda", 90, 32))
    triton_utils.triton_backend = lambda: backend

    class Unrunnable:
        def __init__(self, name):
            self.name = name

        def __getattr__(self, attribute):
            return lambda *args, **kwargs: None

        def __call__(self, *args, **kwargs):
            raise RuntimeError(f"{self.name}: generated for a fake GPU, not runnable")

    async_compile.AsyncCompile.triton = lambda self, kernel_name, source_code, device_str="cuda": Unrunnable(kernel_name)

    def cudnn_memory_format(input_, weight, backend):  # cudnn_conv_suggest_memory_format
        if channels_last(input_) or channels_last(weight):
            return torch.channels_last
        return torch.contiguous_format

    def channels_last(tensor):
        return tensor.dim() == 4 and suggest_memory_format(tensor) == torch.channels_last

    torch._C._conv_determine_backend_memory_format = cudnn_memory_format
    inductor_config.joint_graph_constant_folding = False
    inductor_config.benchmark_kernel = True  # puts each kernel's static byte count into its source


def opaque_attention() -> None:
    """F.scaled_dot_product_attention -> an opaque op shaped like flash attention (fwd and bwd)."""

    @torch.library.custom_op("codegen::attention", mutates_args=())
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("opaque attention: shapes only")

    @attention.register_fake
    def _(q, k, v):
        b, h, s, d = q.shape  # flash attention writes [B, S, H, D] and returns it viewed as [B, H, S, D]
        return q.new_empty((b, s, h, d)).transpose(1, 2), q.new_empty((b, h, s), dtype=torch.float32)

    @torch.library.custom_op("codegen::attention_backward", mutates_args=())
    def attention_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                           logsumexp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise RuntimeError("opaque attention: shapes only")

    @attention_backward.register_fake
    def _(grad, q, k, v, out, logsumexp):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs, *output)

    def backward(ctx, grad, grad_logsumexp):
        return attention_backward(grad.contiguous(), *ctx.saved_tensors)

    attention.register_autograd(backward, setup_context=setup_context)

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if attn_mask is not None or dropout_p or is_causal:
            raise NotImplementedError("opaque attention covers plain self-attention only")
        return attention(q, k, v)[0]

    F.scaled_dot_product_attention = sdpa


def group_norm_in_float32(output: str = "float32") -> None:
    """CUDA autocast's rule for group_norm (its fp32 list); CPU autocast keeps the input's bf16. With output
    "input", the norm hands back its input's dtype (bf16), as guided-diffusion's GroupNorm32 does: statistics
    and normalisation in float32, the result rounded once."""
    group_norm = F.group_norm

    def float32_group_norm(x, *args, **kwargs):
        if not torch.is_autocast_enabled("cpu"):
            return group_norm(x, *args, **kwargs)
        y = group_norm(x.float(), *args, **kwargs)
        return y.to(x.dtype) if output == "input" else y

    F.group_norm = float32_group_norm


# ----------------------------------------------------------------------------------------- lowering
def lower_step(call, x: torch.Tensor, t: torch.Tensor, grad: bool, cache_dir: Path,
               cudagraphs: list | None = None) -> list[Path]:
    """Compile `call(x, t)` on CPU as the step runs it (under autograd when `grad`); lower each graph inductor
    gets (forward, and backward when there is one) for CUDA; the paths of their output code, in that order.
    With a list as `cudagraphs`, lower as compile mode "reduce-overhead" does and append, per graph, what
    `cuda_graph_plan` reads."""
    import torch._functorch.config as functorch_config
    from torch._guards import detect_fake_mode
    from torch._inductor.compile_fx import compile_fx, compile_fx_inner
    from torch._inductor.graph import GraphLowering
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    functorch_config.force_non_lazy_backward_lowering = True  # lower the backward with the forward
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)  # fresh: no cache hit skips a lowering
    written = []
    compile_to_module = GraphLowering.compile_to_module

    def record_output_code(self):
        module = compile_to_module(self)
        written.append(Path(module.__file__))
        return module

    def lower_for_cuda(gm, example_inputs, **kwargs):
        cuda = torch.device("cuda", 0)
        for node in gm.graph.nodes:  # factory ops (arange, rand for dropout, ...) name their device
            if isinstance(node.kwargs.get("device"), torch.device):
                node.kwargs = {**node.kwargs, "device": cuda}
            node.args = tuple(cuda if isinstance(a, torch.device) else a for a in node.args)
        gm.recompile()
        mode = detect_fake_mode(example_inputs)
        with mode:
            inputs = [torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=cuda)
                      if isinstance(x, torch.Tensor) else x for x in example_inputs]
        FakeTensorProp(gm, mode=mode).propagate_dont_convert_inputs(*inputs)
        GraphLowering.compile_to_module = record_output_code
        try:
            output_code = compile_fx_inner(gm, inputs, **kwargs)
        finally:
            GraphLowering.compile_to_module = compile_to_module
        if cudagraphs is not None:
            cudagraphs.append(cuda_graph_plan(output_code, inputs, kwargs))

        def not_runnable(args):
            raise RuntimeError("lowered for a fake GPU")

        not_runnable._boxed_call = True
        return not_runnable

    import torch._inductor.config as inductor_config

    compiled = torch.compile(call, backend=lambda gm, inputs: compile_fx(gm, inputs, inner_compile=lower_for_cuda))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(grad), \
            inductor_config.patch({"triton.cudagraphs": cudagraphs is not None}):  # what mode="reduce-overhead" sets
        try:
            compiled(x, t)
        except RuntimeError as err:
            if "fake GPU" not in str(err):
                raise
    return written


def cuda_graph_plan(output_code, inputs: list, kwargs: dict) -> dict:
    """What cudagraph trees will do with one lowered graph: whether inductor keeps graphs for it (else its
    reasons, as it logs "skipping cudagraphs due to ..."), and the tensor inputs that are not static (parameters
    and saved activations are; the step's own inputs and the backward's incoming gradients are not), which
    every replay copies into the graph's buffers. Not seen here: a CPU tensor in the graph (this tool moves every
    graph to the GPU) and anything decided at run time from the tensors' addresses."""
    info = getattr(output_code, "cudagraph_info", None)
    disabled = getattr(output_code, "disabled_cudagraphs_reason", None)
    reasons = [disabled] if disabled else []
    if info is not None:
        reasons += list(info.cudagraph_fail_reasons)
    elif not disabled:
        reasons.append("no cudagraph info: inductor did not consider graphs for this graph")
    static = set(kwargs.get("static_input_idxs") or ())
    # cudagraph trees check these when they record (cudagraph_utils.check_for_mutation), not at compile time:
    # a mutated input that is not static skips the graph unless it is the output of another CUDA graph
    mutated = sorted(set(getattr(output_code, "mutated_input_idxs", ()) or ()) - static)
    if mutated:
        reasons.append(f"mutated inputs ({len(mutated)}, not static), unless each is another CUDA graph's output")
    copied = [x for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and i not in static]
    return {"graphs_kept": not reasons, "skip_reasons": reasons,
            "tensor_inputs": sum(isinstance(x, torch.Tensor) for x in inputs), "static_inputs": len(static),
            "copied_per_replay": [f"{list(x.shape)} {str(x.dtype).removeprefix('torch.')}" for x in copied],
            "copied_mb_per_replay": round(sum(x.numel() * x.element_size() for x in copied) / 2**20, 2)}


def inventory(path: Path) -> dict:
    """Launches in the generated call(): Triton kernels by kind with their static MB, extern kernels by op."""
    source = path.read_text()
    megabytes = {}
    for match in re.finditer(r"(\w+) = async_compile\.triton\('\w+', '''(.*?)'''", source, re.S):
        num_gb = re.search(r"'kernel_num_gb': ([0-9.e+-]+)", match.group(2))
        megabytes[match.group(1)] = float(num_gb.group(1)) * 1e3 if num_gb else 0.0
    # with CUDA graphs, inductor splits call() into partitions (each one graph), which Runner.call runs in order
    partitions = len(re.findall(r"^def partition_\d+\(args\)", source, re.M))
    call = source[source.find("def partition_0(args)") if partitions else source.rfind("def call(self, args)"):]
    lines = [line for line in call.splitlines() if not line.strip().startswith("#") and "assert_" not in line]
    launches = collections.Counter()
    traffic = collections.Counter()
    kinds = {"poi": "triton pointwise", "per": "triton persistent reduction", "red": "triton reduction"}
    for triton, extern, op in re.findall(r"(triton_\w+)\.run\(|extern_kernels\.(\w+)\(|torch\.ops\.(\w+\.\w+)",
                                        "\n".join(lines)):
        if triton:
            kind = kinds.get(triton.split("_")[1], "triton other")
            traffic[kind] += megabytes.get(triton, 0.0)
        else:
            kind = extern or op
        launches[kind] += 1
    return {"launches": dict(launches), "launches_total": sum(launches.values()), "graph_partitions": partitions,
            "triton_mb": {k: round(v, 1) for k, v in traffic.items()},
            "triton_mb_total": round(sum(traffic.values()), 1),
            "convolution_layouts": convolution_layouts(call)}


def convolution_layouts(call: str) -> dict:
    """How many convolution (and convolution_backward) calls get which operand layouts, e.g.
    "input CL, weight CL": 52. CL is channels_last, NCHW contiguous ("slice": that order within a larger
    buffer). cuDNN converts mixed layouts itself, in kernels that inductor's launch count does not see.
    Layouts are read from the generated code's stride asserts, allocations, views and buffer reuses."""
    view = r"reinterpret_tensor\(\w+, (\([^)]*\)), (\([^)]*\))"  # a view: (size), (stride)
    size_stride = {}  # buffer name -> (size, stride) of the 4-D tensors

    def note(name, size, stride):
        if len(size) == 4:
            size_stride[name] = (tuple(size), tuple(stride))

    for line in call.splitlines():
        line = line.strip()
        if line.startswith("assert_size_stride_grouped("):  # ((names), (sizes), (strides), 'input')
            names, rest = line[len("assert_size_stride_grouped(("):].split(")", 1)
            sizes, strides, _ = ast.literal_eval("(" + rest.lstrip(", ")[:-1] + ")")
            for name, size, stride in zip(names.replace(" ", "").split(","), sizes, strides):
                note(name, size, stride)
        elif match := re.match(r"(?:assert_size_stride|assert_tensor_metadata)\((\w+), (\([^)]*\)), (\([^)]*\))", line):
            note(match[1], ast.literal_eval(match[2]), ast.literal_eval(match[3]))
        elif match := re.match(r"(\w+) = (?:empty_strided_cuda\((\([^)]*\)), (\([^)]*\))|" + view + ")", line):
            size, stride = (match[2], match[3]) if match[2] else (match[4], match[5])
            note(match[1], ast.literal_eval(size), ast.literal_eval(stride))
        elif (match := re.match(r"(\w+) = (\w+); del \2\s+# reuse", line)) and match[2] in size_stride:
            size_stride[match[1]] = size_stride[match[2]]

    def layout(operand):
        if match := re.match(view, operand):  # a view made in the call's argument list
            note(operand, ast.literal_eval(match[1]), ast.literal_eval(match[2]))
        if operand not in size_stride:
            return "?"
        (_, c, h, w), stride = size_stride[operand]
        dense = stride[0] == c * h * w  # else a slice of a larger buffer, e.g. the gradient of a torch.cat
        if stride[1:] == (h * w, w, 1):
            return "NCHW" if dense else "NCHW slice"
        if stride[1:] == (1, w * c, c):
            return "CL" if dense else "CL slice"
        return f"strides {stride}"

    found = collections.Counter()
    for match in re.finditer(r"= (extern_kernels\.convolution|torch\.ops\.aten\.convolution_backward\.default)\(",
                             call):
        roles = ("input", "weight") if match[1].startswith("extern") else ("grad_output", "input", "weight")
        kind = "convolution" if match[1].startswith("extern") else "convolution_backward"
        operands, depth, start = [], 0, match.end()
        for end in range(match.end(), len(call)):  # the leading operands, split at commas outside parentheses
            if call[end] in "([":
                depth += 1
            elif call[end] in ")]":
                depth -= 1
            if depth < 0 or (depth == 0 and call[end] == ","):
                operands.append(call[start:end].strip())
                start = end + 1
                if depth < 0 or len(operands) == len(roles):
                    break
        found[f"{kind}: " + ", ".join(f"{role} {layout(name)}" for role, name in zip(roles, operands))] += 1
    return dict(found)


TRAINING_NETS = ("ours", "diffusers")
SAMPLING_NETS = ("unet", "classifier")


def build(name: str, dropout: float | None):
    """(net, call(x, t), whether the step takes gradients) for one of TRAINING_NETS or SAMPLING_NETS.

    Training: ours is conf/net/unet_cifar10.yaml, diffusers train_throughput's configuration; train mode,
    gradients to the weights. Sampling (what a guided step of guided_sweep.py compiles): the same UNet,
    eval, forward under no_grad; the encoder_cifar10 classifier, eval, weights frozen, forward and backward
    to its input."""
    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    if name in SAMPLING_NETS:
        from guided_sweep import build_nets

        unet, classifier, _ = build_nets("cifar10", "cpu")  # eval, weights frozen
        net = unet if name == "unet" else classifier
        return net, (lambda x, t: net(x, t)), name == "classifier"
    if name == "ours":
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "src/guidelab/conf/net/unet_cifar10.yaml")
        if dropout is not None:
            cfg.dropout = dropout
        net = instantiate(cfg).train()
        return net, (lambda x, t: net(x, t)), True
    from diffusers import UNet2DModel
    from train_throughput import DIFFUSERS_CIFAR10

    net = UNet2DModel(**{**DIFFUSERS_CIFAR10, **({} if dropout is None else {"dropout": dropout})}).train()
    return net, (lambda x, t: net(x, t).sample), True


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", choices=("train", "sampling"), default="train",
                        help="a training step (nets ours, diffusers) or a guided sampling step (nets unet, classifier)")
    parser.add_argument("--nets", nargs="+", choices=TRAINING_NETS + SAMPLING_NETS, default=None,
                        help="default: both nets of the step")
    parser.add_argument("--batch", type=int, default=None, help="default 128 (train), 512 (sampling, as guided_sweep)")
    parser.add_argument("--layout", choices=("channels_last", "nchw"), default="channels_last",
                        help="weights and input as the fast path has them (channels_last), or left to inductor")
    parser.add_argument("--dropout", type=float, default=None,
                        help="training: override each net's dropout (ours 0.1, theirs 0.0)")
    parser.add_argument("--combo-kernels", action="store_true",
                        help="inductor's combo_kernels: independent small kernels launched as one")
    parser.add_argument("--recompute", action="store_true",
                        help="the fast path's `recompute`: inductor's thresholds for materialising an intermediate "
                             "raised (fast_nets.RECOMPUTE_OPTIONS) for steps that take a gradient")
    parser.add_argument("--norm-output", choices=("float32", "input"), default="float32",
                        help="group_norm's result: float32 as CUDA autocast gives it, or the input's dtype (bf16)")
    parser.add_argument("--cudagraphs", action="store_true",
                        help="lower as compile mode reduce-overhead does: per graph, whether inductor keeps CUDA "
                             "graphs and what each replay copies in (the graphs' input layouts then read '?': "
                             "inductor asserts no input strides in partitioned code)")
    parser.add_argument("--json", type=Path, help="write the counts here")
    parser.add_argument("--keep", type=Path, help="copy the generated code here (NET_forward.py, NET_backward.py)")
    args = parser.parse_args(argv)
    step_nets = TRAINING_NETS if args.step == "train" else SAMPLING_NETS
    args.nets = args.nets or list(step_nets)
    if set(args.nets) - set(step_nets):
        parser.error(f"--step {args.step} takes --nets from {list(step_nets)}, got {args.nets}")
    args.batch = args.batch or (128 if args.step == "train" else 512)
    if torch.cuda.is_available():
        parser.error("a GPU is here: time the real thing instead (train_throughput.py --kernels 3)")
    if len(args.nets) > 1:  # one process per net: the patches leave state behind that a second compile trips on
        results = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.nets:
                out = Path(tmp) / f"{name}.json"
                rest = strip_option(list(argv if argv is not None else sys.argv[1:]), "--nets", "--json")
                subprocess.run([sys.executable, __file__, *rest, "--nets", name, "--json", str(out)], check=True)
                report = json.loads(out.read_text())
                setup, results[name] = report["setup"], report["nets"][name]
        return summarise(setup, results, args)
    fake_h100()
    opaque_attention()
    group_norm_in_float32(args.norm_output)
    if args.combo_kernels:
        import torch._inductor.config as inductor_config

        inductor_config.combo_kernels = True
    import triton

    setup = {"torch": torch.__version__, "triton": triton.__version__, "target": "sm_90 (fake H100)",
             "step": args.step, "batch": args.batch, "layout": args.layout, "dropout": args.dropout,
             "combo_kernels": args.combo_kernels, "norm_output": args.norm_output, "cudagraphs": args.cudagraphs,
             "recompute": args.recompute}
    print(json.dumps(setup), flush=True)
    name = args.nets[0]
    torch.manual_seed(0)
    net, call, grad = build(name, args.dropout)
    if args.recompute and grad:  # as FastNet compiles a call that takes a gradient
        import torch._inductor.config as inductor_config
        from guidelab.evaluation.fast_nets import RECOMPUTE_OPTIONS

        for option, value in RECOMPUTE_OPTIONS.items():
            setattr(inductor_config, option, value)
    x = torch.randn(args.batch, 3, 32, 32)
    if args.layout == "channels_last":
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(name == "classifier")  # the guidance gradient is taken w.r.t. x_t
    t = torch.randint(0, 1000, (args.batch,))
    graphs = ("forward", "backward") if grad else ("forward",)
    with tempfile.TemporaryDirectory() as tmp:
        plans = [] if args.cudagraphs else None
        paths = lower_step(call, x, t, grad, Path(tmp), cudagraphs=plans)
        if len(paths) != len(graphs):
            raise SystemExit(f"{name}: expected graphs {graphs}, inductor wrote {len(paths)}")
        result = {"parameters": sum(p.numel() for p in net.parameters())}
        for index, (graph, path) in enumerate(zip(graphs, paths)):
            result[graph] = inventory(path)
            if plans is not None:
                result[graph]["cuda_graphs"] = plans[index]
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"{name}_{graph}.py").write_text(path.read_text())
    for graph in graphs:
        row = result[graph]
        print(f"{name} {graph}: {row['launches_total']} launches, Triton kernels move {row['triton_mb_total']:,.0f} MB; "
              + json.dumps(row["launches"]), flush=True)
        print(f"{name} {graph}: convolution operand layouts " + json.dumps(row["convolution_layouts"]), flush=True)
        if "cuda_graphs" in row:
            plan = row["cuda_graphs"]
            kept = "kept" if plan["graphs_kept"] else "SKIPPED: " + "; ".join(plan["skip_reasons"])
            copied = plan["copied_per_replay"]
            print(f"{name} {graph}: CUDA graphs {kept} ({row['graph_partitions']} partition(s)); each replay copies "
                  f"{len(copied)} of {plan['tensor_inputs']} inputs ({plan['copied_mb_per_replay']} MB): "
                  + ", ".join(copied), flush=True)
    return summarise(setup, {name: result}, args)


def strip_option(argv: list[str], *options: str) -> list[str]:
    """argv without the given options and their values."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg.split("=")[0] in options
            if skipping:
                continue
        elif skipping:
            continue
        kept.append(arg)
    return kept


def summarise(setup: dict, results: dict, args) -> dict:
    print(f"\n{'net':<12}{'launches fwd + bwd':>20}{'Triton MB fwd + bwd':>24}   "
          f"({setup['step']} step, batch {setup['batch']}, {setup['layout']})")
    for name, result in results.items():
        fwd, bwd = result["forward"], result.get("backward", {"launches_total": 0, "triton_mb_total": 0.0})
        print(f"{name:<12}{fwd['launches_total']:>9} + {bwd['launches_total']:<9}"
              f"{fwd['triton_mb_total']:>12,.0f} + {bwd['triton_mb_total']:<10,.0f}")
    report = {"setup": setup, "nets": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
