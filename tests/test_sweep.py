"""guidelab-sweep and the GuidedSamplingCallback on tiny real checkpoints (digits)."""

import json

import pytest
from conftest import compose_config, tiny_train_overrides

from guidelab.apps.sweep import run_sweep
from guidelab.apps.train import train
from guidelab.modules import CheckpointError

TINY_SWEEP = [
    "guidance.scales=[-1.0,0.0,2.0]",
    "guidance.samples_per_scale=20",
    "guidance.steps=5",
    "metrics.num_real=100",
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for task, extra in [("ddpm", []), ("classifier", []), ("eval_classifier", []),
                        ("cosine_classifier", ["task=classifier", "diffusion=cosine"]),
                        ("cosine_ddpm", ["task=ddpm", "diffusion=cosine"]),
                        ("clean_classifier", ["task=eval_classifier", "seed=1"]),
                        ("big_eval_classifier", ["task=eval_classifier", "data.image_size=16"])]:
        overrides = tiny_train_overrides(root / task, task if not extra else extra[0].split("=")[1], steps=2)
        paths[task] = train(compose_config("train", overrides + extra[1:]))["last_checkpoint"]
    return paths


def sweep_config(out, ckpts, extra=(), **which):
    ckpt = {"ddpm": "ddpm", "classifier": "classifier", "eval_classifier": "eval_classifier", **which}
    return compose_config("sweep", [
        f"ddpm_checkpoint={ckpts[ckpt['ddpm']]}",
        f"classifier_checkpoint={ckpts[ckpt['classifier']]}",
        f"eval_classifier_checkpoint={ckpts[ckpt['eval_classifier']]}",
        f"paths.output_dir={out}",
        "logger=wandb",
        *TINY_SWEEP,
        *extra,
    ])


def test_sweep_writes_report_and_wandb_media(checkpoints, tmp_path, capsys):
    result, paths = run_sweep(sweep_config(tmp_path, checkpoints))
    # written to a file or pipe (as pytest captures it), each long stage leaves a plain progress line
    out = capsys.readouterr().out
    assert "features of 100 real images (classifier): batch 1/1" in out
    assert "guided sampling: classifier: batch" in out
    doc = json.loads((tmp_path / "quality_diversity.json").read_text())
    assert [row["scale"] for row in doc["rows"]] == [-1.0, 0.0, 2.0]
    for row in doc["rows"]:
        for key in ("method", "scale", "fid", "accuracy", "precision", "recall", "samples_per_s", "nfe_per_sample",
                    "s_per_sample"):
            assert key in row
        assert row["fid"] is not None and row["fid"] >= 0
    assert doc["settings"]["sampler"] == "ddim" and doc["settings"]["steps"] == 5
    assert doc["settings"]["num_classes"] == 10  # the digits; the sample grids put one class per column
    assert doc["settings"]["methods_pending"] == []  # the whole sweep
    import guidelab
    import torch

    versions = doc["settings"]["versions"]  # what produced it
    assert versions["guidelab"] == guidelab.__version__ != "unknown" and versions["torch"] == torch.__version__
    assert versions["pytorch_lightning"] and versions["device"]
    assert doc["timings"]["sampling_s"] > 0
    assert {row["method"] for row in doc["rows"]} == {"classifier"}
    assert all(row["nfe_per_sample"] == 3 * 5 for row in doc["rows"])  # eps + classifier forward + backward, 5 steps
    trajectory = doc["trajectory"]["classifier"]
    assert len(trajectory["t"]) == 5 and len(trajectory["grad_norm"]) == 3
    assert (tmp_path / "quality_diversity.png").stat().st_size > 10_000
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    media = list((run_dir / "files" / "media").rglob("*"))
    assert any(p.suffix == ".png" for p in media)
    assert any("table" in p.name for p in media)


@pytest.mark.parametrize(
    "which,match",
    [
        ({"classifier": "cosine_classifier"}, "schedule.kind: ddpm .* has 'linear', classifier .* has 'cosine'"),
        ({"eval_classifier": "big_eval_classifier"}, r"image_shape: classifier .* has \[1, 8, 8\], eval_classifier .* has \[1, 16, 16\]"),
        ({"classifier": "ddpm"}, "holds a 'ddpm' model, but a classifier checkpoint is needed"),
    ],
)
def test_sweep_refuses_incompatible_checkpoints(checkpoints, tmp_path, which, match):
    with pytest.raises(CheckpointError, match=match):
        run_sweep(sweep_config(tmp_path, checkpoints, **which))
    assert not (tmp_path / "quality_diversity.json").exists()
    assert not (tmp_path / "wandb").exists()


def test_sweep_refuses_steps_beyond_T(checkpoints, tmp_path):
    cfg = sweep_config(tmp_path, checkpoints)
    cfg.guidance.steps = 5000
    with pytest.raises(ValueError, match="steps must be in"):
        run_sweep(cfg)


def test_sweep_that_dies_in_a_later_method_keeps_the_earlier_ones(checkpoints, tmp_path, monkeypatch):
    from guidelab.evaluation import guided_sweep

    real_sample_method = guided_sweep._sample_method

    def dies_in_the_second_method(method, *args, **kwargs):
        if method.name == "cgpp":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_sample_method(method, *args, **kwargs)

    monkeypatch.setattr(guided_sweep, "_sample_method", dies_in_the_second_method)
    with pytest.raises(RuntimeError, match="simulated"):
        run_sweep(sweep_config(tmp_path, checkpoints, extra=["method=[classifier,cgpp]"]))
    doc = json.loads((tmp_path / "quality_diversity.json").read_text())
    assert [(row["method"], row["scale"]) for row in doc["rows"]] == [("classifier", -1.0), ("classifier", 0.0),
                                                                       ("classifier", 2.0)]
    assert list(doc["settings"]["methods"]) == ["classifier"] and doc["settings"]["methods_pending"] == ["cgpp"]
    assert doc["settings"]["ddpm_checkpoint"] == str(checkpoints["ddpm"])  # what it came from, as a whole sweep's
    assert (tmp_path / "quality_diversity.png").is_file() and (tmp_path / "samples_classifier.png").is_file()


def test_a_users_own_method_from_their_config_dir(checkpoints, tmp_path):
    """method/scaled.yaml in the user's dir names their Guidance class by `_target_`; guidelab hands it the
    classifier its constructor asks for and the node's other keys, and samples it beside ours."""
    import torch
    from user_configs import write_user_configs

    from guidelab.diffusion import ClassifierGuidance, sample
    from guidelab.evaluation.guidance_methods import Nets, build_methods
    from guidelab.modules import load_module

    user = write_user_configs(tmp_path / "my_configs")
    cfg = sweep_config(tmp_path / "out", checkpoints, extra=[f"hydra.searchpath=[file://{user}]",
                                                             "method=[classifier,scaled]"])
    result, _ = run_sweep(cfg)
    assert [(row["method"], row["scale"]) for row in result.rows] == [
        (method, w) for method in ("classifier", "scaled") for w in (-1.0, 0.0, 2.0)]
    assert result.settings["methods"]["scaled"]["guidance"] == {"method": "scaled_classifier", "form": "eps",
                                                                "factor": 0.5}
    # what was built is the user's rule with the sweep's classifier: at w=2 it samples as classifier guidance at w=1
    ddpm = load_module(checkpoints["ddpm"], "ddpm")
    nets = Nets(ddpm=ddpm, classifier=None,
                eval_classifier=load_module(checkpoints["eval_classifier"], "eval_classifier"),
                paths={"classifier_checkpoint": checkpoints["classifier"]})
    scaled = build_methods({"scaled": cfg.method.scaled}, nets)["scaled"].guidance
    noise, y = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    run = dict(steps=5, sampler="ddim", noise=noise, y=y)
    ours = sample(ddpm, ddpm.schedule, noise.shape, guidance=ClassifierGuidance(scaled.classifier), scale=1.0, **run)
    assert torch.allclose(sample(ddpm, ddpm.schedule, noise.shape, guidance=scaled, scale=2.0, **run), ours)
    assert not torch.allclose(sample(ddpm, ddpm.schedule, noise.shape, guidance=scaled, scale=1.0, **run), ours)
    # a wrapper of theirs around a method of ours: `inner` is built from its own node, with its nets
    half = build_methods({"half": {"_target_": "user_configs.HalfScale", "inner": {"kind": "classifier"}}}, nets)
    assert torch.allclose(sample(ddpm, ddpm.schedule, noise.shape, guidance=half["half"].guidance, scale=2.0, **run),
                          ours)


@pytest.mark.parametrize("node,match", [
    ({"_target_": "no_such_package.Rule"}, "cannot be imported; is its package installed"),
    ({"_target_": "user_configs.ScaledClassifierGuidance", "factr": 0.5}, r"does not take this node's keys"),
    ({"_target_": "collections.OrderedDict"}, "made a OrderedDict, not a guidelab.diffusion.Guidance"),
    ({"_target_": "user_configs.HalfScale"}, "takes `inner`; give it a method node there"),
])
def test_a_users_method_node_that_cannot_be_built_is_named(checkpoints, tmp_path, node, match):
    from guidelab.evaluation.guidance_methods import Nets, build_methods
    from guidelab.modules import load_module

    nets = Nets(ddpm=load_module(checkpoints["ddpm"], "ddpm"), classifier=None,
                eval_classifier=load_module(checkpoints["eval_classifier"], "eval_classifier"),
                paths={"classifier_checkpoint": checkpoints["classifier"]})
    with pytest.raises(ValueError, match=f"method 'mine': .*{match}"):
        build_methods({"mine": node}, nets)


def test_callback_logs_curves_during_classifier_training(checkpoints, tmp_path):
    overrides = tiny_train_overrides(tmp_path, "classifier", steps=2)
    overrides[overrides.index("logger=csv")] = "logger=wandb"
    overrides += [
        "callbacks=guided_sampling",
        f"callbacks.guided_sampling.ddpm_checkpoint={checkpoints['ddpm']}",
        f"callbacks.guided_sampling.eval_classifier_checkpoint={checkpoints['eval_classifier']}",
        "callbacks.guided_sampling.settings.scales=[0.0,4.0]",
        "callbacks.guided_sampling.settings.samples_per_scale=16",
        "callbacks.guided_sampling.settings.steps=4",
        "callbacks.guided_sampling.metrics.num_real=64",
        "callbacks.guided_sampling.every_n_epochs=1",
        "method@callbacks.guided_sampling.method=[classifier,cgpp]",
    ]
    train(compose_config("train", overrides))
    report = tmp_path / "guided_sampling" / "epoch001"
    assert (report / "quality_diversity.png").is_file()
    rows = json.loads((report / "quality_diversity.json").read_text())["rows"]
    assert [(r["method"], r["scale"]) for r in rows] == [("classifier", 0.0), ("classifier", 4.0),
                                                          ("cgpp", 0.0), ("cgpp", 4.0)]
    assert rows[0]["fid"] == rows[2]["fid"]  # scale 0: both unguided from the same x_T
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    media = [p for p in (run_dir / "files" / "media").rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in media)
    tables = [p for p in media if p.name.endswith(".table.json")]
    assert any(len(json.loads(p.read_text())["data"]) == 4 for p in tables)  # the table of both methods


def test_callback_refuses_ddpm_of_another_schedule(checkpoints, tmp_path):
    overrides = tiny_train_overrides(tmp_path, "classifier", steps=1) + [
        "diffusion=cosine",
        "callbacks=guided_sampling",
        f"callbacks.guided_sampling.ddpm_checkpoint={checkpoints['ddpm']}",
        f"callbacks.guided_sampling.eval_classifier_checkpoint={checkpoints['eval_classifier']}",
    ]
    with pytest.raises(CheckpointError, match="schedule.kind"):
        train(compose_config("train", overrides))
    assert not (tmp_path / "checkpoints").exists()


def test_callback_refuses_a_method_its_sampler_cannot_run_before_training(checkpoints, tmp_path):
    overrides = tiny_train_overrides(tmp_path, "classifier", steps=1) + [
        "callbacks=guided_sampling",
        f"callbacks.guided_sampling.ddpm_checkpoint={checkpoints['ddpm']}",
        f"callbacks.guided_sampling.eval_classifier_checkpoint={checkpoints['eval_classifier']}",
        "method@callbacks.guided_sampling.method=[classifier,cgpp]",
        "callbacks.guided_sampling.settings.sampler=ddpm",
    ]
    with pytest.raises(ValueError, match="method cgpp with sampler=ddpm, .* use sampler=ddim"):
        train(compose_config("train", overrides))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("extra,match", [
    (["callbacks.guided_sampling.metrics.num_real=100000"],
     r"callbacks.guided_sampling.metrics.\*\): num_real=100000 must be an integer in \[1, \d+\]"),
    (["callbacks.guided_sampling.metrics.features=inception",
      "callbacks.guided_sampling.metrics.inception_weights=/nonexistent/inception.pth"],
     "features=inception: Inception weights .* not found at /nonexistent/inception.pth"),
], ids=["num_real", "inception_weights"])
def test_callback_refuses_bad_metric_settings_before_training(checkpoints, tmp_path, extra, match):
    overrides = tiny_train_overrides(tmp_path, "classifier", steps=1) + [
        "callbacks=guided_sampling",
        f"callbacks.guided_sampling.ddpm_checkpoint={checkpoints['ddpm']}",
        f"callbacks.guided_sampling.eval_classifier_checkpoint={checkpoints['eval_classifier']}",
        *extra,
    ]
    with pytest.raises(ValueError, match=match):
        train(compose_config("train", overrides))
    assert not (tmp_path / "checkpoints").exists()


def test_same_seed_gives_identical_sweeps(checkpoints, tmp_path):
    first, _ = run_sweep(sweep_config(tmp_path / "a", checkpoints))
    second, _ = run_sweep(sweep_config(tmp_path / "b", checkpoints))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("samples_per_s", "s_per_sample")} for r in rows]
    assert strip(first.rows) == strip(second.rows)
    assert first.trajectory == second.trajectory


def test_classifier_on_a_second_stream_from_the_config(checkpoints, tmp_path):
    """method.classifier.streams=true reaches the guidance object and the sweep's record; off CUDA the rows are
    those of the default."""
    first, _ = run_sweep(sweep_config(tmp_path / "a", checkpoints, extra=["method=[classifier]"]))
    second, _ = run_sweep(sweep_config(tmp_path / "b", checkpoints,
                                       extra=["method=[classifier]", "method.classifier.streams=true"]))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("samples_per_s", "s_per_sample")} for r in rows]
    assert strip(first.rows) == strip(second.rows)
    assert second.settings["methods"]["classifier"]["guidance"]["streams"] is True
    assert "streams" not in first.settings["methods"]["classifier"]["guidance"]


def test_several_methods_share_x_T_and_report_costs(checkpoints, tmp_path):
    cfg = sweep_config(tmp_path, checkpoints, extra=[
        "method=[classifier,interval,cgpp,projected,clean_x0,autoguidance_cg]",
        f"clean_classifier_checkpoint={checkpoints['clean_classifier']}",
        f"weak_ddpm_checkpoint={checkpoints['ddpm']}"])
    result, paths = run_sweep(cfg)
    names = ["classifier", "interval", "cgpp", "projected", "clean_x0", "autoguidance_cg"]  # rows named by config
    assert [row["method"] for row in result.rows] == [name for name in names for _ in range(3)]
    unguided = [row for row in result.rows if row["scale"] == 0.0]
    for row in unguided:  # scale 0 is the unguided sampler for every method, and x_T is shared
        assert {k: row[k] for k in ("fid", "accuracy", "precision", "recall")} == \
            {k: unguided[0][k] for k in ("fid", "accuracy", "precision", "recall")}
    cost = {row["method"]: row["nfe_per_sample"] for row in result.rows}
    assert cost == {"classifier": 15, "interval": 3 * 3 + 2, "cgpp": 15, "projected": 15, "clean_x0": 15,
                    "autoguidance_cg": 20}  # per step: interval guides 3 of the 5 steps; autoguidance adds 1
    assert all(row["s_per_sample"] > 0 for row in result.rows)
    assert set(result.settings["methods"]) == set(names)
    assert {f"samples_{tag}_w2.0.png" for tag in ("classifier", "cgpp", "clean_x0")} <= set(paths)


@pytest.mark.parametrize("guide,match", [("eval_classifier", "same file"), ("eval_copy", "same weights")])
def test_clean_guidance_refuses_the_judge(checkpoints, tmp_path, guide, match):
    import shutil

    path = checkpoints["eval_classifier"]
    if guide == "eval_copy":
        path = shutil.copy(path, tmp_path / "renamed.ckpt")
    cfg = sweep_config(tmp_path / "out", checkpoints, extra=["method=[clean_x0]", f"clean_classifier_checkpoint={path}"])
    with pytest.raises(CheckpointError, match=f"is the evaluation classifier .*{match}.*fakes the accuracy"):
        run_sweep(cfg)
    assert not (tmp_path / "out" / "quality_diversity.json").exists()


@pytest.mark.parametrize("extra,match", [
    (["method=[autoguidance]", "weak_ddpm_checkpoint=COSINE"], "schedule.kind: ddpm .* has 'linear', ddpm .* has 'cosine'"),
    (["method=[autoguidance]"], "needs weak_ddpm_checkpoint"),
    (["method=[cfg]"], "needs a task=cfg_ddpm eps-model"),
    (["method=[classifier_mean]", "+method.classifier_mean.steps=9999"], "method.classifier_mean.steps must be in"),
])
def test_methods_refuse_mismatched_or_missing_nets(checkpoints, tmp_path, extra, match):
    extra = [e.replace("COSINE", str(checkpoints["cosine_ddpm"])) for e in extra]
    with pytest.raises((CheckpointError, ValueError), match=match):
        run_sweep(sweep_config(tmp_path, checkpoints, extra=extra))
    assert not (tmp_path / "quality_diversity.json").exists()


@pytest.mark.parametrize("every_s, terminal, expected", [(0.0, False, ["1/3", "2/3", "3/3"]), (3600.0, False, ["3/3"]),
                                                          (0.0, True, [])])
def test_sweep_progress_prints_plain_lines_into_a_log_file(every_s, terminal, expected):
    """A transient Rich bar written to a file shows nothing: the sweep prints a plain line per chunk there, at
    most every `every_s` seconds and once at the end; a terminal gets the bar alone."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from guidelab.evaluation.guided_sweep import log_line

    out = io.StringIO()
    with Progress(console=Console(file=out, width=100, force_terminal=terminal), transient=True) as bar:
        task = bar.add_task("guided sampling: classifier", total=3)
        for _ in range(3):
            bar.advance(task)
            log_line(bar, task, every_s=every_s)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("guided sampling: classifier: batch")]
    assert [line.split("batch ")[1].split(",")[0] for line in lines] == expected
