"""How train_throughput.py reads a GPU profile, checked on a stand-in profile (a GPU call is rare, and a fault
there costs the call's figures)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import benchmark_script

STEPS, WALL_MS = 2, 2.0


@pytest.fixture(scope="module")
def bench():
    return benchmark_script("train_throughput")


def device(name):
    return SimpleNamespace(name=name)


def average(key, kind, *, cpu_us=0.0, gpu_us=0.0, count=STEPS, annotation=False):
    """One row of prof.key_averages()."""
    return SimpleNamespace(key=key, device_type=device(kind), self_cpu_time_total=cpu_us,
                           self_device_time_total=gpu_us, count=count, is_user_annotation=annotation)


def op(name, parent=None, kernel_us=()):
    """One CPU op of prof.events(), with the kernels it launched."""
    return SimpleNamespace(name=name, device_type=device("CPU"), cpu_parent=parent,
                           kernels=[SimpleNamespace(duration=us) for us in kernel_us])


@pytest.fixture
def profile():
    """Two steps: a compiled forward launching two Triton kernels of 500 us, AccumulateGrad launching four
    copies of 75 us, and the optimizer's annotation, which spans kernels and must not count as one."""
    compiled = op("CompiledFunction")
    accumulate = op("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad")
    events = [compiled, op("## Call CompiledFxGraph abc ##", compiled, kernel_us=(500.0,)),
              op("## Call CompiledFxGraph abc ##", compiled, kernel_us=(500.0,)),
              accumulate] + [op("aten::copy_", accumulate, kernel_us=(75.0,)) for _ in range(4)]
    averages = [
        average("CompiledFunction", "CPU", cpu_us=900.0),
        average("aten::copy_", "CPU", cpu_us=100.0, count=4),
        average("triton_poi_fused_add_0", "CUDA", gpu_us=1000.0),
        average("void at::native::elementwise_kernel<direct_copy_kernel>", "CUDA", gpu_us=300.0, count=4),
        average("Optimizer.step#AdamW.step", "CUDA", gpu_us=5000.0, annotation=True),
    ]
    return SimpleNamespace(key_averages=lambda: averages, events=lambda: events)


def test_kernel_breakdown_counts_kernels_not_annotations(bench, profile):
    found = bench.kernel_breakdown(profile, STEPS, WALL_MS)
    assert found["ms_per_step_by_kind"] == pytest.approx({"triton (compiled fusions)": 0.5, "copies / layout": 0.15})
    assert found["gpu_ms_per_step"] == pytest.approx(0.65)
    assert found["gpu_busy"] == pytest.approx(0.65 / WALL_MS)
    assert [k["name"] for k in found["top_kernels"]][0] == "triton_poi_fused_add_0"
    assert found["host_self_ms_per_step"] == pytest.approx(0.5)
    assert [h["name"] for h in found["top_host_ops"]] == ["CompiledFunction", "aten::copy_"]


def test_kernel_breakdown_names_the_op_that_launched_each_kernel(bench, profile):
    launchers = bench.kernel_breakdown(profile, STEPS, WALL_MS)["gpu_ms_by_launcher"]
    assert launchers[0] == {"ms_per_step": 0.5, "kernels_per_step": 1, "outermost_op": "CompiledFunction",
                            "op": "## Call CompiledFxGraph abc ##"}
    assert launchers[1] == {"ms_per_step": 0.15, "kernels_per_step": 2, "op": "aten::copy_",
                            "outermost_op": "autograd::engine::evaluate_function: torch::autograd::AccumulateGrad"}


def test_print_kernels_prints_every_part(bench, profile, capsys):
    bench.print_kernels("ours_plain_compiled", bench.kernel_breakdown(profile, STEPS, WALL_MS))
    out = capsys.readouterr().out
    assert "GPU busy 32% of 2.0 ms" in out
    assert "autograd::engine::evaluate_function: torch::autograd::AccumulateGrad / aten::copy_" in out
    assert "triton_poi_fused_add_0" in out


def test_sync_points_count_synchronizing_calls_per_step_by_line(bench):
    def warning(message, filename, lineno):
        return SimpleNamespace(message=UserWarning(message), filename=filename, lineno=lineno)

    caught = ([warning("called a synchronizing CUDA operation", "/repo/loop.py", 10)] * 4
              + [warning("called a synchronizing CUDA operation", "/site/torch/optim/adamw.py", 3)] * 2
              + [warning("TypedStorage is deprecated", "/repo/loop.py", 12)])
    assert bench.sync_points(caught, STEPS) == [{"per_step": 2.0, "at": "loop.py:10"},
                                                {"per_step": 1.0, "at": "adamw.py:3"}]


def test_plain_loop_profiles_then_times_again(bench):
    """The --kernels path end to end on CPU: profile read, sync points skipped off CUDA, a rate after the profile."""
    import torch

    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    rate, details = bench.plain_loop(net, lambda n, x, t: n(x), torch.device("cpu"), batch=2, image_size=8,
                                     warmup=1, steps=4, profile_steps=2)
    assert rate > 0 and details["images_per_s_after_profile"] > 0
    assert details["allocator_during_timed_steps"] is None and details["sync_points"] is None  # CUDA only
    # on the CPU every op runs as it is issued: issuing a step takes about the step's wall time
    assert details["wall_ms_per_step"] == pytest.approx(2 / rate * 1000, rel=0.01)
    assert 0 < details["host_issue_ms_per_step"] < 20 * details["wall_ms_per_step"]
    assert details["kernels"]["wall_ms_per_step"] > 0 and details["kernels"]["gpu_ms_per_step"] == 0
    assert any("convolution" in op["name"] for op in details["kernels"]["top_host_ops"])


def test_a_failing_row_is_recorded_and_the_next_rows_still_run(bench, monkeypatch, tmp_path, capsys):
    calls = []

    def plain_loop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA graphs: static input moved")
        return 123.0, {"allocator_during_timed_steps": None}

    monkeypatch.setattr(bench, "plain_loop", plain_loop)
    out = tmp_path / "rows.json"
    rows = bench.main(["--quick", "--compile-backend", "inductor", "--only", "ours_plain_eager", "ours_plain_eager",
                       "--json", str(out)])
    assert rows[0]["images_per_s"] is None and rows[0]["error"] == "RuntimeError: CUDA graphs: static input moved"
    assert rows[1]["images_per_s"] == 123.0
    assert "failed" in capsys.readouterr().out
    assert json.loads(out.read_text())["complete"] is True


def test_guidelab_train_row_times_steps_then_issue_times(bench, tmp_path):
    """A guidelab-train row (tiny net, CPU): the timed window's rate, then the host's issue time per step, measured
    on the steps after the window, which the row's max_steps makes room for."""
    import subprocess
    import sys

    out = tmp_path / "rows.json"  # run as a script: the row's Trainer finds its StepTimer callback in __main__
    subprocess.run([sys.executable, bench.__file__, "--quick", "--only", "ours_train_eager", "--warmup", "2",
                    "--steps", "4", "--json", str(out)], check=True, capture_output=True, timeout=600, cwd=tmp_path)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["images_per_s"] > 0 and row["wall_ms_per_step"] == pytest.approx(16 / row["images_per_s"] * 1000,
                                                                               rel=0.01)
    assert row["host_issue_ms_per_step"] > 0  # from bench.issue_steps(4) = 2 steps after the window
    assert row["allocator_during_timed_steps"] is None


def test_ddp_variant_contexts_change_what_they_name_and_restore_it(bench):
    """The DDP variant rows run inside a context: one swaps Lightning's side-stream DDP setup for one that builds DDP
    where it is called, the other turns dynamo's DDPOptimizer off; both hand the originals back."""
    import torch
    from pytorch_lightning.strategies import DDPStrategy

    lightning_setup, splits = DDPStrategy._setup_model, torch._dynamo.config.optimize_ddp
    built = []
    strategy = SimpleNamespace(determine_ddp_device_ids=lambda: [0], _ddp_kwargs={"broadcast_buffers": False})
    with pytest.MonkeyPatch.context() as patch:  # Lightning's would enter torch.cuda.stream(torch.cuda.Stream())
        patch.setattr(torch.cuda, "stream", lambda *a: pytest.fail("DDP built on a side stream"))
        patch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda **kw: built.append(kw) or "ddp")
        with bench.ddp_on_current_stream():
            assert DDPStrategy._setup_model is not lightning_setup
            assert DDPStrategy._setup_model(strategy, "net") == "ddp"
    assert built == [{"module": "net", "device_ids": [0], "broadcast_buffers": False}]
    assert DDPStrategy._setup_model is lightning_setup
    with bench.whole_graph_under_ddp():
        assert torch._dynamo.config.optimize_ddp is False
    assert torch._dynamo.config.optimize_ddp == splits


def train_rows_on_cpu(bench, tmp_path, names: list[str]):
    """Run train_throughput.py's rows `names` on CPU (tiny net, 2 warm-up and 3 timed steps at batch 2, compiled in
    torch.compile's default mode); assert each trained, and hand back the finished process."""
    import subprocess
    import sys

    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, bench.__file__, "--quick", "--only", *names, "--warmup", "2", "--steps", "3",
                          "--batch", "2", "--train-override", "task.module.compile=default", "--json", str(out)],
                         check=True, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    rows = json.loads(out.read_text())["rows"]
    assert [row["figure"] for row in rows] == names and all(row["images_per_s"] > 0 for row in rows)
    return run


@pytest.mark.slow
def test_ddp_variant_rows_train_on_cpu(bench, tmp_path):
    """Each DDP variant row trains through guidelab-train (tiny net, gloo, one process), compiled as its name says."""
    run = train_rows_on_cpu(bench, tmp_path, ["ours_train_fast_ddp1_same_stream", "ours_train_fast_ddp1_whole_graph",
                                              "ours_train_fast_ddp1_graphs"])
    modes = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("ddpm net on cpu")]
    assert ["'default' mode" in modes[0], "'default' mode" in modes[1], "'reduce-overhead' mode" in modes[2]] == \
        [True] * 3


@pytest.mark.slow
def test_recompute_row_trains_on_cpu(bench, tmp_path):
    """ours_train_fast_recompute trains through guidelab-train (tiny net, CPU) and the report compares it with
    ours_train_fast."""
    run = train_rows_on_cpu(bench, tmp_path, ["ours_train_fast", "ours_train_fast_recompute"])
    assert "ours_train_fast_recompute / ours_train_fast = " in run.stdout


def test_kernel_names_keep_the_op_of_aten_elementwise_kernels(bench):
    """ATen's elementwise kernels all begin alike; the name kept must reach the functor that says which op ran."""
    copy = ("void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::"
            "direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda()#7}::"
            "operator()() const::{lambda(c10::BFloat16)#1}>(at::TensorIteratorBase&, at::native::"
            "direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const)::{lambda(int)#1}>"
            "(int, at::native::gpu_kernel_impl_nocast)")
    name = bench.kernel_name(copy)
    assert name.startswith("elementwise_kernel<128, 4, gpu_kernel_impl_nocast<direct_copy_kernel_cuda(")
    assert len(name) == 110 and "at::" not in name
    assert bench.kernel_name("triton_poi_fused_add_0") == "triton_poi_fused_add_0"


def test_report_table_shows_wall_and_issue_time_per_step(bench, capsys):
    """The closing table puts each row's host issue time beside its wall time: their ratio says whether the GPU
    waited for the host (near 1) or was the limit (far below)."""
    rows = [{"figure": "diffusers_compiled", "images_per_s": 3000.0, "wall_ms_per_step": 42.67,
             "host_issue_ms_per_step": 12.8},
            {"figure": "ours_train_fast_nographs", "images_per_s": 4000.0, "wall_ms_per_step": 32.0,
             "host_issue_ms_per_step": 3.2},
            {"figure": "ours_train_fast", "images_per_s": None, "error": "RuntimeError: boom"},
            {"figure": "ours_train_fast_ddp1_same_stream", "images_per_s": 3000.0, "wall_ms_per_step": 42.67,
             "host_issue_ms_per_step": 40.0}]
    written = []
    bench.report(rows, {"device": "cpu", "torch": "x"}, 128, lambda complete: written.append(complete))
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("figure "))
    table = {line.split()[0]: line.split()[1:] for line in lines[header + 1:] if line and " / " not in line}
    assert table["diffusers_compiled"] == ["3,000.0", "42.67", "12.80", "0.30"]
    assert table["ours_train_fast_nographs"] == ["4,000.0", "32.00", "3.20", "0.10"]
    assert table["ours_train_fast"][:2] == ["failed", "RuntimeError:"]
    assert "ours_train_fast_nographs / diffusers_compiled = 1.33 (target >= 1.2)" in lines and written == [True]
    # a name longer than the old 26-character column keeps its own columns, and DDP's overhead is put against the
    # same compile mode on one device
    assert table["ours_train_fast_ddp1_same_stream"] == ["3,000.0", "42.67", "40.00", "0.94"]
    long_row = next(line for line in lines if line.startswith("ours_train_fast_ddp1_same_stream "))
    assert long_row.index("3,000.0") + len("3,000.0") == lines[header].index("images/s") + len("images/s")
    assert "ours_train_fast_ddp1_same_stream / ours_train_fast_nographs = 0.75 (DDP on one device / no DDP)" in lines


def test_ddp_graphs_counts_the_cuts_ddp_optimizer_makes():
    """ddp_graphs.py (digits-sized net, 1 MB buckets): DDPOptimizer cuts the compiled net into more than one graph,
    the pieces together hold the whole graph's nodes, and without DDPOptimizer the net compiles whole."""
    module = benchmark_script("ddp_graphs")
    cut = module.main(["--quick", "--bucket-mb", "1"])
    whole = module.main(["--quick", "--bucket-mb", "1", "--whole"])
    assert cut["graphs"] > 1 and whole["graphs"] == 1
    assert sum(cut["nodes_per_graph"]) == whole["nodes_per_graph"][0]
    with pytest.raises(SystemExit):
        module.main(["--quick", "--bucket-mb", "0.5"])


def test_recompute_variant_turns_recompute_on_for_compiled_paths_only_and_restores_choose():
    """guided_sweep.py's `recompute` row runs its sweep and step cost inside `recomputing`: every compiled FastPath
    chosen there has `recompute` on, an exact one is left as it is, and FastPath.choose comes back after."""
    from guidelab.evaluation.fast_nets import FastPath

    guided_sweep = benchmark_script("guided_sweep")
    before = FastPath.choose("on", "cpu")
    with guided_sweep.recomputing(True):
        assert FastPath.choose("on", "cpu").recompute and FastPath.choose("graphs", "cpu").recompute
        assert FastPath.choose("off", "cpu") == FastPath()
    with guided_sweep.recomputing(False):
        assert FastPath.choose("on", "cpu") == before
    assert FastPath.choose("on", "cpu") == before and not before.recompute
    assert guided_sweep.VARIANTS["recompute"].recompute and not guided_sweep.VARIANTS["default"].recompute
    assert set(guided_sweep.DEFAULT_VARIANTS) == set(guided_sweep.VARIANTS) - {"recompute"}  # opt-in row


def test_recompute_row_context_sets_the_fast_paths_options_and_restores_them(bench):
    """ours_train_fast_recompute trains inside `recompute_in_inductor`: inductor's thresholds are RECOMPUTE_OPTIONS
    there and inductor's own values after."""
    import torch._inductor.config as inductor_config

    from guidelab.evaluation.fast_nets import RECOMPUTE_OPTIONS

    before = {option: getattr(inductor_config, option) for option in RECOMPUTE_OPTIONS}
    assert before != RECOMPUTE_OPTIONS
    with bench.recompute_in_inductor():
        assert {option: getattr(inductor_config, option) for option in RECOMPUTE_OPTIONS} == RECOMPUTE_OPTIONS
    assert {option: getattr(inductor_config, option) for option in RECOMPUTE_OPTIONS} == before
