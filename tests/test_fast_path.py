"""The sampling fast path: bf16 nets with fp32 guidance math (bounded on the analytic oracle), no classifier
work for rows whose scale is 0, frozen parameters while sampling, and the sweep's choice of path."""

from collections import Counter
from dataclasses import replace
from math import nan

import pytest
import torch
from rich.progress import Progress
from torch import nn

from gaussian_mixture import GaussianMixture
from guidelab.diffusion import NoiseSchedule, sample
from guidelab.diffusion.guidance import ClassifierGuidance, GuidanceInterval
from guidelab.evaluation.fast_nets import RECOMPUTE_OPTIONS, FastNet, FastPath, with_fast_nets
from guidelab.evaluation.guidance_methods import SweepMethod
from guidelab.evaluation.guided_sweep import _chunk_rows, _dealt, _frozen, _plan, _sample_method, _TrajectoryProbe
from test_scale_schedules import settings

MEANS = [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]
STDS = [0.3, 0.3, 0.3]
WEIGHTS = [0.5, 0.3, 0.2]
TARGET = 1
N = 3000
# What bf16 nets may change, stated once: mean distance to the fp32 sample from the same x_T (deterministic
# samplers), class fractions, and the on-target statistics of assert-on-target below.
BF16_MEAN_DISTANCE = 0.01
BF16_FRACTION = 0.01


class OracleNet(nn.Module):
    """An oracle function behind an identity Linear layer, so that autocast runs a bf16 matmul on x_t and the
    oracle sees x_t rounded to bf16, as the first layer of a real net would."""

    def __init__(self, fn, num_classes=None):
        super().__init__()
        self.fn = fn
        self.linear = nn.Linear(2, 2)
        if num_classes is not None:
            self.num_classes = num_classes
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(2))
            self.linear.bias.zero_()

    def forward(self, x, t):
        return self.fn(self.linear(x), t)


@pytest.fixture(scope="module")
def oracle():
    return GaussianMixture(NoiseSchedule.linear(1000), MEANS, STDS, WEIGHTS)


@pytest.fixture(scope="module")
def nets(oracle):
    return OracleNet(oracle.eps), OracleNet(oracle.classify, num_classes=3)


def draw(eps_net, clf_net, oracle, scale, sampler, steps, seed=0):
    return sample(eps_net, oracle.schedule, (N, 2), classifier=clf_net, y=torch.full((N,), TARGET), scale=scale,
                  sampler=sampler, steps=steps, noise=torch.randn(N, 2, generator=torch.Generator().manual_seed(seed)),
                  generator=torch.Generator().manual_seed(seed + 1))


def fractions(oracle, x):
    return torch.bincount(oracle.label(x), minlength=3).float() / len(x)


@pytest.mark.parametrize("sampler,steps", [("ddim", 50), ("dpm++2m", 20), ("ddpm", 100)])
@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_bf16_nets_keep_oracle_results(oracle, nets, sampler, steps, scale):
    fast = FastPath(bf16=True)
    exact = draw(*nets, oracle, scale, sampler, steps)
    bf16 = draw(fast.wrap(nets[0]), fast.wrap(nets[1]), oracle, scale, sampler, steps)
    assert bf16.dtype == torch.float32
    assert (bf16 - exact).norm(dim=1).mean() < BF16_MEAN_DISTANCE  # same x_T and noise: same place up to rounding
    assert torch.allclose(fractions(oracle, bf16), fractions(oracle, exact), atol=BF16_FRACTION)
    if scale == 1.0:  # on target as the exact path is (whose accuracy at these steps test_guidance_oracle checks)
        chosen = bf16[oracle.label(bf16) == TARGET]
        assert len(chosen) >= 0.98 * N
        assert torch.allclose(chosen.mean(0), exact.mean(0), atol=BF16_MEAN_DISTANCE)
        assert torch.allclose(chosen.std(0), exact.std(0), rtol=0.02)


def test_bf16_net_computes_in_bf16_and_returns_fp32(nets):
    seen = []
    net = nn.Linear(2, 2)
    net.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    out = FastPath(bf16=True).wrap(net)(torch.randn(4, 2))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert FastPath(bf16=True).wrap(nets[1]).num_classes == 3


class CountingClassifier(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.rows = fn, []
        self.num_classes = 3

    def forward(self, x, t):
        self.rows.append(len(x))
        return self.fn(x, t)


def test_zero_scale_rows_skip_the_classifier(oracle):
    n = 40
    noise = torch.randn(2 * n, 2, generator=torch.Generator().manual_seed(3))
    y = torch.full((2 * n,), TARGET)
    scales = torch.tensor([0.0, 2.0]).repeat_interleave(n)
    counting = CountingClassifier(oracle.classify)
    infos = []
    mixed = sample(oracle.eps, oracle.schedule, (2 * n, 2), classifier=counting, y=y, scale=scales, noise=noise,
                   sampler="ddim", steps=10, callback=infos.append)
    assert counting.rows == [n] * 10  # forward (and backward) on the guided half only
    # the same samples as guiding every row through a classifier that sees them all
    alone = [sample(oracle.eps, oracle.schedule, (n, 2), classifier=oracle.classify, y=y[:n], scale=w,
                    noise=noise[k * n:(k + 1) * n], sampler="ddim", steps=10) for k, w in enumerate((0.0, 2.0))]
    assert torch.allclose(mixed, torch.cat(alone), atol=1e-5)
    assert all(torch.isnan(info["log_prob"][:n]).all() and torch.isfinite(info["log_prob"][n:]).all()
               and (info["grad"][:n] == 0).all() for info in infos)
    counting.rows.clear()
    sample(oracle.eps, oracle.schedule, (n, 2), classifier=counting, y=y[:n], scale=0.0, noise=noise[:n],
           sampler="ddim", steps=10)
    assert counting.rows == []


def test_steps_outside_the_interval_skip_the_classifier(oracle):
    counting = CountingClassifier(oracle.classify)
    seen = []
    sample(oracle.eps, oracle.schedule, (8, 2), guidance=GuidanceInterval(ClassifierGuidance(counting), 0, 499),
           y=torch.full((8,), TARGET), scale=1.0, sampler="ddim", steps=10,
           callback=lambda info: seen.append(int(info["timestep"][0])))
    assert len(counting.rows) == sum(t <= 499 for t in seen) == 5


def test_sweep_chunks_give_the_classifier_one_batch_shape(oracle):
    """Every chunk of a sweep holds the scales in equal shares, so the classifier (which skips the w=0 rows) sees
    the same number of rows in every chunk: a compiled classifier compiles once. Scale by scale, 36 rows of 3
    scales in chunks of 9 gave it 9, 3, 3 and 9 rows. The images come back in the plan's order."""
    sweep = settings(scales=[-1.0, 0.0, 2.0], samples_per_scale=12, batch_size=9, steps=4, fast_path="off")
    plan = _plan(sweep, 3, (2,), rank=0, world=1)
    counting = CountingClassifier(oracle.classify)
    method = SweepMethod("classifier", ClassifierGuidance(counting), oracle.eps)
    with Progress(disable=True) as bar:
        images, _, _ = _sample_method(method, oracle.schedule, (2,), plan, sweep, torch.device("cpu"), bar)
    assert counting.rows == [6] * 4 * 4  # 4 chunks x 4 steps, 6 guided rows each
    scale_index, y, x_T = plan
    whole = sample(oracle.eps, oracle.schedule, (36, 2), classifier=oracle.classify, y=y,
                   scale=torch.tensor(sweep.scales)[scale_index], noise=x_T, sampler="ddim", steps=4, clip_denoised=True)
    assert torch.allclose(images, whole, atol=1e-5)


@pytest.mark.parametrize("counts", [[12, 12, 12], [5, 9, 2, 7], [0, 0]])
def test_dealt_order_shares_every_run_of_rows_between_the_scales(counts):
    scale_index = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    order = _dealt(scale_index, len(counts))
    assert sorted(order.tolist()) == list(range(len(scale_index)))
    assert all(torch.equal(order[scale_index[order] == k], (scale_index == k).nonzero().squeeze(1))
               for k in range(len(counts)))  # each scale's rows keep their order
    for end in range(1, len(order) + 1):  # in every run from the start, the scales with rows left are within one
        seen = torch.bincount(scale_index[order[:end]], minlength=len(counts))
        open_ = seen < torch.tensor(counts)
        assert not open_.any() or seen[open_].max() - seen[open_].min() <= 1


@pytest.mark.parametrize("counts, batch_size", [([11, 11, 11], 9), ([1500] * 7, 1024), ([5, 9, 2, 7], 8),
                                                ([12, 12, 12], 9), ([3, 0, 3], 2), ([0, 0], 4)])
def test_padded_chunks_have_one_shape_and_hold_every_row_once(counts, batch_size):
    scale_index = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    order, padding, count = _chunk_rows(scale_index, len(counts), batch_size, pad=True)
    assert sorted(order[~padding].tolist()) == list(range(len(scale_index)))  # every row once, besides the repeats
    shares = {tuple(torch.bincount(scale_index[chunk], minlength=len(counts)).tolist())
              for chunk in order.tensor_split(count)}
    assert len(shares) == 1  # every chunk: the same rows of each scale, so one shape for every net
    assert sum(next(iter(shares))) <= batch_size
    present = sum(n > 0 for n in counts)
    # under one repeat per scale and chunk, besides filling up the scales with fewer rows
    assert int(padding.sum()) <= present * (count - 1) + sum(max(counts) - n for n in counts if n)
    unpadded = _chunk_rows(scale_index, len(counts), batch_size, pad=False)
    assert not unpadded[1].any() and torch.equal(unpadded[0], _dealt(scale_index, len(counts)))
    assert unpadded[2] == max(1, -(-len(scale_index) // batch_size))


def test_a_compiled_sweep_pads_uneven_chunks_to_one_shape(oracle, monkeypatch):
    """33 rows of 3 scales in batches of 9: near-equal chunks hold 9, 8, 8 and 8 rows, and the classifier meets
    two row counts. Compiled nets get 4 chunks of 9 (one repeat per scale) instead, both nets meet one shape, and
    the samples and trajectory statistics are those of the unpadded run (bf16 both: `eager` pads nothing)."""
    monkeypatch.setattr(torch, "compile", lambda net, **kwargs: net)  # fast_path=on, without inductor's build
    runs = {}
    for fast_path in ("on", "eager"):
        sweep = settings(scales=[-1.0, 0.0, 2.0], samples_per_scale=11, batch_size=9, steps=3, fast_path=fast_path)
        plan = _plan(sweep, 3, (2,), rank=0, world=1)
        eps, classifier = CountingClassifier(oracle.eps), CountingClassifier(oracle.classify)
        method = SweepMethod("classifier", ClassifierGuidance(classifier), eps)
        with Progress(disable=True) as bar:
            images, probe, _ = _sample_method(method, oracle.schedule, (2,), plan, sweep, torch.device("cpu"), bar)
        runs[fast_path] = images, probe.summary(sweep.scales), set(eps.rows), set(classifier.rows)
    (padded, padded_probe, eps_rows, classifier_rows), (plain, plain_probe, plain_eps_rows, _) = runs["on"], runs["eager"]
    assert (eps_rows, classifier_rows) == ({9}, {6}) and plain_eps_rows == {8, 9}
    assert padded.shape == plain.shape == (33, 2)
    assert torch.allclose(padded, plain, atol=1e-5)
    for key in ("grad_norm", "p_target"):  # the repeated rows are not counted (None: a scale the guide skipped)
        padded_stats, plain_stats = ([[nan if v is None else v for v in line] for line in probe[key]]
                                     for probe in (padded_probe, plain_probe))
        assert torch.allclose(torch.tensor(padded_stats), torch.tensor(plain_stats), rtol=1e-4, equal_nan=True)


def test_probe_reports_no_gradient_statistics_for_unevaluated_rows():
    probe = _TrajectoryProbe(num_scales=2, num_steps=1, device="cpu")
    probe.start_batch(torch.tensor([0, 0, 1, 1]))
    log_prob = torch.tensor([float("nan"), float("nan"), -0.5, -1.0])
    grad = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    probe({"grad": grad, "log_prob": log_prob, "timestep": torch.tensor([7]), "timestep_value": 7, "nfe": 2.0})
    summary = probe.summary([0.0, 1.0])
    assert summary["grad_norm"] == [[None], [pytest.approx(3.0)]]
    assert summary["p_target"][0] == [None]
    assert summary["p_target"][1][0] == pytest.approx((torch.tensor(-0.5).exp() + torch.tensor(-1.0).exp()).item() / 2)


def test_frozen_while_sampling_then_restored():
    trainable, frozen = nn.Linear(2, 2), nn.Linear(2, 2).requires_grad_(False)
    guidance = GuidanceInterval(ClassifierGuidance(trainable), 0, 10)  # nets found inside guidance objects
    with _frozen(frozen, guidance) as had:
        assert had == {id(trainable)}
        assert not any(p.requires_grad for p in [*trainable.parameters(), *frozen.parameters()])
    assert all(p.requires_grad for p in trainable.parameters())
    assert not any(p.requires_grad for p in frozen.parameters())


def test_fast_nets_inside_guidance_objects():
    classifier, model = nn.Linear(2, 3), nn.Linear(2, 2)
    guidance = GuidanceInterval(ClassifierGuidance(classifier, num_classes=3), 0, 10)
    fast_model, fast_guidance = with_fast_nets((model, guidance), FastPath(bf16=True))
    assert isinstance(fast_model, FastNet) and fast_model.inner is model
    assert isinstance(fast_guidance.inner.classifier, FastNet) and fast_guidance.inner.classifier.inner is classifier
    assert guidance.inner.classifier is classifier  # the original object is left as it was
    assert with_fast_nets((model, guidance), FastPath()) == (model, guidance)


def test_fast_path_choice():
    assert FastPath.choose("auto", "cpu").exact
    assert FastPath.choose("auto", "cuda") == FastPath(bf16=True, channels_last=True, compile=True)
    assert FastPath.choose("eager", "cpu") == FastPath(bf16=True, channels_last=True, compile=False)
    assert FastPath.choose("graphs", "cpu") == FastPath(bf16=True, channels_last=True, compile=True, cuda_graphs=True)
    assert FastPath.choose("graphs", "cpu").compile_mode == "reduce-overhead"
    assert FastPath.choose("on", "cpu").compile_mode == "default"
    assert FastPath.choose("off", "cuda").exact
    with pytest.raises(ValueError, match="cuda_graphs needs compile"):
        FastPath(bf16=True, cuda_graphs=True)
    net = nn.Conv2d(3, 4, 3)
    assert FastPath.choose("off", "cuda").wrap(net) is net
    with pytest.raises(ValueError, match="fast_path.*'turbo'"):
        settings(fast_path="turbo")


def test_channels_last_leaves_trainable_weights_alone():
    conv = nn.Conv2d(3, 4, 3)
    wrapped = FastPath(channels_last=True).wrap(conv, convert_weights=False)
    assert conv.weight.is_contiguous()
    frozen = nn.Conv2d(3, 4, 3)
    out = FastPath(channels_last=True).wrap(frozen)(torch.randn(2, 3, 8, 8))
    assert frozen.weight.is_contiguous(memory_format=torch.channels_last) and out.is_contiguous()
    assert isinstance(wrapped, FastNet)


class _GraphMemory(torch.autograd.Function):
    """Stands in for a CUDA graph replay: the forward output and the input gradient live in buffers that the next
    replay overwrites."""

    @staticmethod
    def forward(ctx, x, out_buffer, grad_buffer):
        ctx.grad_buffer = grad_buffer
        return out_buffer.copy_(x * 2)

    @staticmethod
    def backward(ctx, grad):
        return ctx.grad_buffer.copy_(grad * 2), None, None


class ReplayedNet(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.out_buffer, self.grad_buffer = torch.zeros(shape), torch.zeros(shape)

    def forward(self, x, t):
        return _GraphMemory.apply(x.float(), self.out_buffer, self.grad_buffer)


def test_graphs_path_compiles_reduce_overhead_and_hands_back_copies(monkeypatch):
    """With CUDA graphs the outputs and the input gradient a replay writes are reused by the next replay: the
    wrapper must hand back copies, or the eps (or guidance gradient) of one step would change under the next."""
    modes = []
    monkeypatch.setattr(torch, "compile", lambda net, mode=None: modes.append(mode) or net)
    shape = (2, 3, 4, 4)
    net = ReplayedNet(shape)
    wrapped = FastPath.choose("graphs", "cpu").wrap(net)
    assert modes == ["reduce-overhead"]
    x = torch.randn(shape).requires_grad_(True)
    out = wrapped(x, None)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(out, 2 * x.detach()) and torch.equal(grad, torch.full(shape, 2.0))
    assert out.untyped_storage().data_ptr() != net.out_buffer.untyped_storage().data_ptr()
    assert grad.untyped_storage().data_ptr() != net.grad_buffer.untyped_storage().data_ptr()
    net.out_buffer.zero_(), net.grad_buffer.zero_()  # the next replay
    assert torch.equal(out, 2 * x.detach()) and torch.equal(grad, torch.full(shape, 2.0))
    # without graphs the same net's memory is handed on as it is (nothing copied that need not be)
    plain = FastPath(bf16=True, channels_last=True, compile=False).wrap(net)(torch.randn(shape), None)
    assert plain.untyped_storage().data_ptr() == net.out_buffer.untyped_storage().data_ptr()


@pytest.mark.parametrize("mode", ["on", "graphs"])
def test_recompute_compiles_the_calls_that_take_a_gradient_with_its_options(monkeypatch, mode):
    """FastPath.recompute: a call that takes a gradient w.r.t. x (the guidance gradient) runs a second compilation
    of the net, with RECOMPUTE_OPTIONS on top of the mode's own options (torch.compile takes a mode or options,
    not both); a call without a gradient runs the mode's compilation. torch.compile is a recording stand-in."""
    compiled = []

    def recording_compile(net, mode=None, options=None):
        calls = []
        compiled.append((mode, options, calls))
        return lambda *args: calls.append(torch.is_grad_enabled()) or net(*args)

    monkeypatch.setattr(torch, "compile", recording_compile)
    path = replace(FastPath.choose(mode, "cpu"), recompute=True)
    wrapped = path.wrap(nn.Conv2d(3, 3, 1))
    (plain_mode, plain_options, plain_calls), (grad_mode, grad_options, grad_calls) = compiled
    assert (plain_mode, plain_options, grad_mode) == (path.compile_mode, None, None)
    assert grad_options == {**({"triton.cudagraphs": True} if mode == "graphs" else {}), **RECOMPUTE_OPTIONS}
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with torch.no_grad():
        wrapped(x)
    (grad,) = torch.autograd.grad(wrapped(x).sum(), x)
    assert plain_calls == [False] and grad_calls == [True] and grad.shape == x.shape
    compiled.clear()
    FastPath.choose(mode, "cpu").wrap(nn.Conv2d(3, 3, 1))
    assert len(compiled) == 1, "without recompute one compilation serves every call"
    with pytest.raises(ValueError, match="recompute needs compile"):
        FastPath(bf16=True, recompute=True)


@pytest.mark.slow
def test_recompute_gives_the_gradient_eager_gives_on_cpu():
    """Inductor (CPU) with RECOMPUTE_OPTIONS, on a GroupNorm-SiLU-conv net under bf16: the input gradient and the
    output of the eager bf16 net."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))
    x = torch.randn(4, 3, 8, 8)
    results = []
    for path in (FastPath.choose("eager", "cpu"), replace(FastPath.choose("on", "cpu"), recompute=True)):
        x_in = x.clone().requires_grad_(True)
        out = path.wrap(net)(x_in)
        (grad,) = torch.autograd.grad(out.square().sum(), x_in)
        results.append((out.detach(), grad))
    (eager_out, eager_grad), (out, grad) = results
    assert torch.allclose(eager_out, out, atol=3e-2)
    assert torch.allclose(eager_grad, grad, atol=3e-2 * eager_grad.abs().max().item())


def test_sampling_benchmarks_cudnn_on_the_fast_path_only():
    before = torch.backends.cudnn.benchmark
    try:
        for setting in (False, True):
            torch.backends.cudnn.benchmark = setting
            with FastPath.choose("on", "cuda").sampling("cuda"):
                assert torch.backends.cudnn.benchmark
            assert torch.backends.cudnn.benchmark is setting
            for path, device in ((FastPath.choose("off", "cuda"), "cuda"), (FastPath.choose("on", "cpu"), "cpu")):
                with path.sampling(device):
                    assert torch.backends.cudnn.benchmark is setting
    finally:
        torch.backends.cudnn.benchmark = before


@pytest.mark.parametrize("fast_path", ["off", "eager"])
def test_a_sweep_without_compile_runs_a_net_compiled_elsewhere_eagerly(oracle, fast_path):
    """The callback's classifier is compiled in place for training (on one GPU with CUDA graphs, which hand back
    the input gradient in their own memory). A sweep on a path without compile runs it eagerly, as off and eager
    promise, and the compiled call is back afterwards. The compiled calls are counted by a backend that runs
    the graph eagerly."""
    runs = []

    def counting_backend(graph_module, example_inputs):
        def run(*args):
            runs.append(len(args))
            return graph_module.forward(*args)
        return run

    torch._dynamo.reset()
    classifier = OracleNet(oracle.classify, num_classes=3)
    classifier.compile(backend=counting_backend)
    x, t = torch.randn(6, 2), torch.full((6,), 500)
    classifier(x, t)
    assert runs, "the net compiled in place runs its compiled graph"
    sweep = settings(scales=[0.0, 2.0], samples_per_scale=6, batch_size=12, steps=3, fast_path=fast_path)
    plan = _plan(sweep, 3, (2,), rank=0, world=1)
    method = SweepMethod("classifier", ClassifierGuidance(classifier), OracleNet(oracle.eps))
    runs.clear()
    with Progress(disable=True) as bar:
        images, _, _ = _sample_method(method, oracle.schedule, (2,), plan, sweep, torch.device("cpu"), bar)
    assert runs == [] and torch.isfinite(images).all()
    classifier(x, t)
    assert runs, "after the sweep the compiled call is back"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["on", "graphs"])
def test_compiled_path_matches_eager_on_cpu(mode):
    """torch.compile (inductor, CPU) of a small conv net under bf16 gives what the eager bf16 net gives; "graphs"
    compiles in reduce-overhead mode, which on CPU tensors runs without graphs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))
    x = torch.randn(4, 3, 8, 8)
    eager = FastPath.choose("eager", "cpu").wrap(net)(x, )
    compiled = FastPath.choose(mode, "cpu").wrap(net)(x)
    assert torch.allclose(eager, compiled, atol=3e-2)


def test_a_compiled_sweep_compiles_each_net_once_when_the_counts_do_not_divide(monkeypatch, compiled_graphs):
    """Dynamo itself, on the real nets (tiny widths): 33 rows of 3 scales in batches of 9 on fast_path=on. Padded
    chunks give each net one graph; near-equal chunks (9, 8, 8, 8 rows; 6, 5, 6, 5 guided) recompile both. Graphs
    are counted by a backend that runs them eagerly, so no inductor build is needed."""
    import guidelab.evaluation.guided_sweep as guided_sweep
    from guidelab.nets import EncoderClassifier, UNet

    net = dict(image_size=8, in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
               attention_downsample=(2,), num_heads=4, dropout=0.0, groups=8)
    torch.manual_seed(0)
    model, classifier = UNet(**net).eval(), EncoderClassifier(**net, num_classes=3).eval()

    def compiles(pad: bool) -> dict:
        compiled_graphs.clear()
        torch._dynamo.reset()
        sweep = settings(scales=[-1.0, 0.0, 2.0], samples_per_scale=11, batch_size=9, steps=2, fast_path="on")
        plan = _plan(sweep, 3, (1, 8, 8), rank=0, world=1)
        method = SweepMethod("classifier", ClassifierGuidance(classifier), model)
        with monkeypatch.context() as patch, Progress(disable=True) as bar:
            patch.setattr(guided_sweep, "_chunk_rows", lambda *args, **_: _chunk_rows(*args, pad=pad))
            _sample_method(method, NoiseSchedule.linear(1000), (1, 8, 8), plan, sweep, torch.device("cpu"), bar)
        return Counter(name for name, _ in compiled_graphs)

    assert compiles(pad=True) == {"UNet": 1, "EncoderClassifier": 1}
    unpadded = compiles(pad=False)
    assert unpadded["UNet"] > 1 and unpadded["EncoderClassifier"] > 1, unpadded
