"""work_per_sample.py's fusion floor, on functions small enough to count by hand (float32: 4 bytes an element).

The floor backs a claim about issue 12's step-ratio target (experiments/benchmarks/README.md), so each rule is
checked where it would give another number if it were wrong."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import benchmark_script


@pytest.fixture(scope="module")
def floor():
    return benchmark_script("work_per_sample").fusion_floor


X = torch.randn(2, 4, 8, 8)  # 512 elements, 2,048 bytes
W = torch.randn(4, 4, 3, 3)  # 144 elements, 576 bytes
IMAGE, WEIGHT = X.numel() * 4, W.numel() * 4


def test_library_op_reads_and_writes_and_fused_code_between_crosses_memory_once(floor):
    """conv(silu(x) * 2 + 1): the fused chain reads x once and writes its result once, whatever its length;
    the convolution reads that result and the weight and writes its output."""
    counts = floor(lambda x: F.conv2d(F.silu(x) * 2 + 1, W, padding=1), X)
    assert counts == {"library_ops": IMAGE + WEIGHT + IMAGE, "fused_writes": IMAGE, "fused_reads": IMAGE,
                      "total": 4 * IMAGE + WEIGHT}


def test_a_value_read_on_both_sides_of_a_library_op_is_read_twice(floor):
    """a = conv(x); out = a * conv(relu(a)): relu(a) and the product cannot share a kernel (the product waits for
    the convolution that reads relu(a)), so a is read twice. Read twice in one phase (a * 2 + relu(a)), once."""
    def two_phases(x):
        a = F.conv2d(x, W, padding=1)
        return a * F.conv2d(F.relu(a), W, padding=1)

    def one_phase(x):
        a = F.conv2d(x, W, padding=1)
        return F.conv2d(a * 2 + F.relu(a), W, padding=1)

    split, joined = floor(two_phases, X), floor(one_phase, X)
    assert split["fused_reads"] == 3 * IMAGE  # a twice, the second convolution's output once
    assert joined["fused_reads"] == IMAGE  # a once
    assert split["fused_writes"] == 2 * IMAGE  # relu(a) for the convolution, and the product returned
    assert joined["fused_writes"] == IMAGE  # a * 2 + relu(a), for the convolution


def test_views_are_their_base_and_weight_only_values_are_free(floor):
    """A view is the tensor it views: read through views on both sides of a convolution, a is still read twice.
    The weight's bf16 copy (autocast's cast of a weight alone) is not written: only the convolution's read of it
    counts."""
    def two_phases_through_views(x):
        a = F.conv2d(x, W, padding=1).view(2, 4, 64).view(2, 4, 8, 8)
        return a * F.conv2d(F.relu(a), W, padding=1)

    def cast_weight(x):
        return F.conv2d(x.to(torch.bfloat16), W.to(torch.bfloat16), padding=1)

    assert floor(two_phases_through_views, X)["fused_reads"] == 3 * IMAGE
    cast = floor(cast_weight, X)
    assert cast["fused_writes"] == IMAGE // 2  # x in bf16; the weight's copy is free
    assert cast["library_ops"] == IMAGE // 2 + WEIGHT // 2 + IMAGE // 2


def test_the_gradient_of_a_norm_reads_its_input_again_and_a_convolutions_backward_not_its_input(floor):
    """The gradient of sum(conv(silu(group_norm(a)))) w.r.t. x, with a = conv(x).

    - a is read twice: by the forward's norm (its statistics and its normalisation in one kernel), and by the
      norm's backward, which waits for the second convolution's backward. A third read would mean the forward's
      two readers were counted as two phases.
    - The two convolution backwards compute the input's gradient only, so they read the incoming gradient and
      the weight, not the layer's input (x, silu(...)).
    - Written: silu(...) for the convolution, the norm's input gradient for the first convolution's backward, and
      sum's incoming gradient (one element, 4 bytes: the backward reads it expanded)."""
    def gradient(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            a = F.conv2d(x, W, padding=1)
            out = F.conv2d(F.silu(F.group_norm(a, 2)), W, padding=1).sum()
            return torch.autograd.grad(out, x)[0]

    convolution = IMAGE + WEIGHT + IMAGE
    assert floor(gradient, X) == {
        "library_ops": 3 * convolution + (4 + WEIGHT + IMAGE),  # two forwards, two backwards (one of 4-byte input)
        "fused_writes": 2 * IMAGE + 4,
        "fused_reads": 4 * IMAGE,  # a twice, the second convolution's output (by sum), its backward's output
        "total": 3 * convolution + 4 + WEIGHT + IMAGE + 2 * IMAGE + 4 + 4 * IMAGE}


def test_the_floor_of_each_preset_net_lies_below_what_its_eager_ops_move(floor):
    """On the digits presets, as the fast path runs them: the floor is below the eager count of the same step
    (which writes and reads every intermediate) and above what its convolutions and attention alone move."""
    guided_sweep, work_per_sample = benchmark_script("guided_sweep"), benchmark_script("work_per_sample")
    model, classifier, shape = guided_sweep.build_nets("digits", "cpu")
    model, classifier = (net.to(memory_format=torch.channels_last) for net in (model, classifier))
    eager = work_per_sample.work_per_sample(model, classifier, shape, "cpu", batch=8, bf16=True)
    floors = work_per_sample.floor_per_sample(model, classifier, shape, batch=8)
    for eager_name, floor_name in (("unet_forward", "unet_forward_mb"),
                                   ("classifier_forward_backward", "classifier_gradient_mb")):
        moved = {kind: mib * 2**20 / 1e6 for kind, mib in eager[eager_name]["mib"].items()}  # MiB -> MB
        assert moved["conv"] < floors[floor_name]["total"] < sum(moved.values())
    assert floors["guided_over_unguided_at_floors"] > 1
