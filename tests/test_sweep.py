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
                        ("big_eval_classifier", ["task=eval_classifier", "data.image_size=16"])]:
        overrides = tiny_train_overrides(root / task, task if not extra else extra[0].split("=")[1], steps=2)
        paths[task] = train(compose_config("train", overrides + extra[1:]))["last_checkpoint"]
    return paths


def sweep_config(out, ckpts, **which):
    ckpt = {"ddpm": "ddpm", "classifier": "classifier", "eval_classifier": "eval_classifier", **which}
    return compose_config("sweep", [
        f"ddpm_checkpoint={ckpts[ckpt['ddpm']]}",
        f"classifier_checkpoint={ckpts[ckpt['classifier']]}",
        f"eval_classifier_checkpoint={ckpts[ckpt['eval_classifier']]}",
        f"paths.output_dir={out}",
        "logger=wandb",
        *TINY_SWEEP,
    ])


def test_sweep_writes_report_and_wandb_media(checkpoints, tmp_path):
    result, paths = run_sweep(sweep_config(tmp_path, checkpoints))
    doc = json.loads((tmp_path / "quality_diversity.json").read_text())
    assert [row["scale"] for row in doc["rows"]] == [-1.0, 0.0, 2.0]
    for row in doc["rows"]:
        for key in ("scale", "fid", "accuracy", "precision", "recall", "samples_per_s"):
            assert key in row
        assert row["fid"] is not None and row["fid"] >= 0
    assert doc["settings"]["sampler"] == "ddim" and doc["settings"]["steps"] == 5
    assert doc["timings"]["sampling_s"] > 0
    assert len(doc["trajectory"]["t"]) == 5 and len(doc["trajectory"]["grad_norm"]) == 3
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


def test_callback_logs_curves_during_classifier_training(checkpoints, tmp_path):
    overrides = tiny_train_overrides(tmp_path, "classifier", steps=2)
    overrides[overrides.index("logger=csv")] = "logger=wandb"
    overrides += [
        "callbacks=guided_sampling",
        f"callbacks.guided_sampling.ddpm_checkpoint={checkpoints['ddpm']}",
        f"callbacks.guided_sampling.eval_classifier_checkpoint={checkpoints['eval_classifier']}",
        "callbacks.guided_sampling.scales=[0.0,4.0]",
        "callbacks.guided_sampling.samples_per_scale=16",
        "callbacks.guided_sampling.steps=4",
        "callbacks.guided_sampling.num_real=64",
        "callbacks.guided_sampling.every_n_epochs=1",
    ]
    train(compose_config("train", overrides))
    report = tmp_path / "guided_sampling" / "epoch001"
    assert (report / "quality_diversity.png").is_file()
    rows = json.loads((report / "quality_diversity.json").read_text())["rows"]
    assert [r["scale"] for r in rows] == [0.0, 4.0]
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    media = [p for p in (run_dir / "files" / "media").rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in media)
    tables = [p for p in media if p.name.endswith(".table.json")]
    assert any(len(json.loads(p.read_text())["data"]) == 2 for p in tables)


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


def test_same_seed_gives_identical_sweeps(checkpoints, tmp_path):
    first, _ = run_sweep(sweep_config(tmp_path / "a", checkpoints))
    second, _ = run_sweep(sweep_config(tmp_path / "b", checkpoints))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]
    assert strip(first.rows) == strip(second.rows)
    assert first.trajectory == second.trajectory
