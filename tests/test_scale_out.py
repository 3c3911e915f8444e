"""Multirun sweeps, launchers, aggregation and DDP on CPU, each in a subprocess as a user would run them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TINY_TRAIN = ["logger=wandb", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
              "data.batch_size=32", "trainer.enable_model_summary=false"]


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def sweep_dirs(log_dir: Path) -> list[Path]:
    return sorted((log_dir / "multirun").iterdir())


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-job train multirun (seed=0,1) of the evaluation classifier plus one DDPM and one classifier."""
    root = tmp_path_factory.mktemp("scale_out")
    log = root / "logs"
    run([BIN / "guidelab-train", "-m", "task=eval_classifier", "seed=0,1", f"paths.log_dir={log}", *TINY_TRAIN], root)
    ckpts = {}
    for task in ("ddpm", "classifier"):
        run([BIN / "guidelab-train", f"task={task}", f"paths.log_dir={log}", *TINY_TRAIN], root)
        ckpts[task] = next((log / task).glob("*/checkpoints/last.ckpt"))
    (sweep,) = sweep_dirs(log)
    ckpts["eval_classifier"] = job_dirs(sweep)[0] / "checkpoints" / "last.ckpt"
    return root, log, sweep, ckpts


def test_train_multirun_jobs_have_own_dirs_and_wandb_runs(trained):
    _, _, sweep, _ = trained
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        assert (job / "wandb_id.txt").read_text() in runs[0].name
    ids = {(job / "wandb_id.txt").read_text() for job in jobs}
    assert len(ids) == 2  # W&B finished between jobs: two runs, not one resumed


def sweep_args(ckpts, log):
    return [f"ddpm_checkpoint={ckpts['ddpm']}", f"classifier_checkpoint={ckpts['classifier']}",
            f"eval_classifier_checkpoint={ckpts['eval_classifier']}", f"paths.log_dir={log}", "logger=wandb",
            "guidance.scales=[0.0,2.0]", "guidance.samples_per_scale=12", "guidance.steps=3", "metrics.num_real=64"]


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_sweep_multirun_and_aggregate(trained, tmp_path, launcher):
    root, _, _, ckpts = trained
    log = tmp_path / "logs"
    extra = [] if launcher == "basic" else ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    run([BIN / "guidelab-sweep", "-m", "seed=0,1", *sweep_args(ckpts, log), *extra], root)
    (sweep,) = sweep_dirs(log)
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    docs = [json.loads((job / "quality_diversity.json").read_text()) for job in jobs]
    assert {doc["settings"]["seed"] for doc in docs} == {0, 1}
    for job in jobs:
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    out = run([BIN / "guidelab-aggregate", str(sweep)], root)
    table = json.loads((sweep / "aggregate.json").read_text())
    assert len(table["runs"]) == 2
    assert [row["scale"] for row in table["rows"]] == [0.0, 2.0]
    for row in table["rows"]:
        assert row["num_runs"] == 2
        fids = [d["rows"][[r["scale"] for r in d["rows"]].index(row["scale"])]["fid"] for d in docs]
        assert row["fid"] == pytest.approx(sum(fids) / 2)
    assert (sweep / "aggregate.png").is_file()
    assert "2 runs" in out.stdout


def callback_args(ckpts):
    return ["callbacks=guided_sampling",
            f"callbacks.guided_sampling.ddpm_checkpoint={ckpts['ddpm']}",
            f"callbacks.guided_sampling.eval_classifier_checkpoint={ckpts['eval_classifier']}",
            f"callbacks.guided_sampling.classifier_checkpoint={ckpts['classifier']}",
            "callbacks.guided_sampling.settings.scales=[0.0,2.0]",
            "callbacks.guided_sampling.settings.samples_per_scale=16", "callbacks.guided_sampling.settings.steps=3",
            "callbacks.guided_sampling.metrics.num_real=64"]


def test_ddp_cpu_trains_both_models_and_callback_matches_single_process(trained, tmp_path):
    root, _, _, ckpts = trained
    common = ["logger=csv", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
              "data.batch_size=16", "trainer.enable_model_summary=false"]
    ddpm_dir = tmp_path / "ddp_ddpm"
    run([BIN / "guidelab-train", "task=ddpm", "trainer=ddp_cpu", f"hydra.run.dir={ddpm_dir}", *common], root)
    assert (ddpm_dir / "checkpoints" / "last.ckpt").is_file()

    outputs = {}
    for name, trainer in [("ddp", "trainer=ddp_cpu"), ("single", "trainer=cpu")]:
        out = tmp_path / name
        run([BIN / "guidelab-train", "task=classifier", trainer, f"hydra.run.dir={out}", *common, *callback_args(ckpts)],
            root)
        reports = list((out / "guided_sampling").iterdir())
        assert [r.name for r in reports] == ["epoch001"]  # one set of files, written once (rank zero)
        outputs[name] = json.loads((reports[0] / "quality_diversity.json").read_text())
        assert len(list(out.rglob("metrics.csv"))) == 1
    assert outputs["ddp"]["timings"]["world_size"] == 2 and outputs["single"]["timings"]["world_size"] == 1
    for ddp_row, single_row in zip(outputs["ddp"]["rows"], outputs["single"]["rows"]):
        assert ddp_row["scale"] == single_row["scale"]
        assert ddp_row["fid"] == pytest.approx(single_row["fid"], rel=1e-3, abs=1e-4)
        assert ddp_row["accuracy"] == pytest.approx(single_row["accuracy"], abs=1e-6)
