"""Kills, preemption, NaNs and determinism: the work survives and nothing is lost."""

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny_train_overrides

from guidelab.apps.errors import app_failures
from guidelab.apps.train import train
from guidelab.modules import DDPMModule, load_module

BIN = Path(sys.executable).parent


def start(args, cwd, env_extra=None):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_API_KEY", None)
    for name, value in (env_extra or {}).items():  # None: unset
        env.pop(name, None) if value is None else env.__setitem__(name, value)
    return subprocess.Popen([str(BIN / "guidelab-train"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_true(tmp_path):
    log = tmp_path / "logs"
    args = ["task=ddpm", f"paths.log_dir={log}", "logger=wandb", "data.batch_size=32", "trainer.log_every_n_steps=5",
            "trainer.enable_model_summary=false"]
    first = start([*args, "trainer.max_epochs=50"], tmp_path)
    last = lambda: list(log.glob("ddpm/*/checkpoints/last.ckpt"))
    wait_for(lambda: bool(last()), first)
    time.sleep(1.5)  # well into the next epoch
    first.send_signal(signal.SIGKILL)
    first.wait()
    (run1,) = [p.parent.parent for p in last()]
    saved = torch.load(run1 / "checkpoints" / "last.ckpt", weights_only=True)
    # last.ckpt is written at an epoch's end: `epoch` is that epoch's index (the kill may come after a few)
    epochs_done = saved["epoch"] + 1
    steps_per_epoch = saved["global_step"] // epochs_done
    run1_id = (run1 / "wandb_id.txt").read_text()

    second = start([*args, f"trainer.max_epochs={epochs_done + 1}", "resume=true"], tmp_path)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-4000:]
    (run2,) = [d for d in (log / "ddpm").iterdir() if d != run1]
    resumed = torch.load(run2 / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == epochs_done * steps_per_epoch
    assert resumed["global_step"] == (epochs_done + 1) * steps_per_epoch  # the step count continued, no restart
    assert (run2 / "wandb_id.txt").read_text() == run1_id  # same W&B run, resumed
    offline_runs = sorted(p.name for p in log.rglob("offline-run-*"))
    assert len(offline_runs) == 2 and all(name.endswith(run1_id) for name in offline_runs)
    assert (run1 / "wandb").exists() and (run1 / "checkpoints" / "last.ckpt").exists()  # nothing deleted


@pytest.mark.slow
def test_sigusr1_under_slurm_saves_and_requeues(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    requeue_log = tmp_path / "scontrol.log"
    (fake_bin / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {requeue_log}\n")
    (fake_bin / "scontrol").chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "guidelab", "SLURM_JOB_ID": "4242",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
             "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    run_dir = tmp_path / "run"
    proc = start(["task=eval_classifier", f"hydra.run.dir={run_dir}", "logger=csv", "trainer.max_epochs=1000"],
                 tmp_path, slurm)
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), proc)
    proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: requeue_log.exists() and list(run_dir.glob("hpc_ckpt_*.ckpt")), proc)
    proc.kill()
    proc.wait()
    assert requeue_log.read_text().split() == ["requeue", "4242"]
    (hpc,) = run_dir.glob("hpc_ckpt_*.ckpt")
    assert load_module(hpc).meta["kind"] == "eval_classifier"


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    original = DDPMModule._losses

    def poisoned(self, x0, generator=None, y=None):
        losses, t = original(self, x0, generator, y)
        return (losses * float("nan"), t) if self.training and self.global_step >= 5 else (losses, t)

    monkeypatch.setattr(DDPMModule, "_losses", poisoned)
    overrides = tiny_train_overrides(tmp_path, "ddpm", steps=4) + ["trainer.max_epochs=3"]
    (tmp_path / "train.log").write_text("what Hydra logged\n")  # as under guidelab-train
    with pytest.raises(FloatingPointError, match="global step 5"):
        with app_failures("guidelab-train", tmp_path):  # main()'s failure handling
            train(compose_config("train", overrides))
    # work had started: the run dir keeps its log, metrics and checkpoints
    assert (tmp_path / "train.log").read_text() == "what Hydra logged\n"
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    good = load_module(tmp_path / "checkpoints" / "last.ckpt")
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert all(torch.isfinite(p).all() for p in good.parameters())


def test_wandb_failure_mid_run_does_not_stop_training(tmp_path, monkeypatch):
    import wandb

    def down(self, *args, **kwargs):
        raise ConnectionError("W&B is down")

    monkeypatch.setattr(wandb.Run, "log", down)  # every W&B write fails once the run is up
    overrides = tiny_train_overrides(tmp_path, "eval_classifier", steps=3)
    overrides[overrides.index("logger=csv")] = "logger=wandb"
    with pytest.warns(RuntimeWarning, match="W&B is down"):
        result = train(compose_config("train", overrides))
    assert Path(result["last_checkpoint"]).is_file()
    assert torch.load(result["last_checkpoint"], weights_only=True)["global_step"] == 3


def test_same_seed_gives_bitwise_identical_samples(tmp_path):
    cfg = compose_config("train", tiny_train_overrides(tmp_path, "ddpm", steps=2))
    ddpm = load_module(train(cfg)["last_checkpoint"])
    a = ddpm.sample(6, steps=5, sampler="ddpm", generator=torch.Generator().manual_seed(3))
    b = ddpm.sample(6, steps=5, sampler="ddpm", generator=torch.Generator().manual_seed(3))
    c = ddpm.sample(6, steps=5, sampler="ddpm", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@contextlib.contextmanager
def unreachable_wandb_server(kind: str):
    """The base URL of a W&B server that cannot be used: a closed local port (connection refused) or a port that
    accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if kind == "silent":
            sock.listen(16)  # connections complete in the backlog, requests are never read
        port = sock.getsockname()[1]
        if kind == "closed":
            sock.close()  # nothing listens there any more
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_unreachable_wandb_server_does_not_block_training(tmp_path, monkeypatch, kind):
    """An API key but no usable server: the run goes offline after one bounded probe, with a warning, and writes
    its checkpoints; before, wandb spent 90 s starting online and its fallback kept retrying the network."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    overrides = tiny_train_overrides(tmp_path, "eval_classifier", steps=2)
    overrides[overrides.index("logger=csv")] = "logger=wandb"
    with unreachable_wandb_server(kind) as url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        tic = time.perf_counter()
        with pytest.warns(RuntimeWarning, match="cannot be reached; logging offline"):
            result = train(compose_config("train", overrides))
        elapsed = time.perf_counter() - tic
    assert elapsed < 60, elapsed
    assert torch.load(result["last_checkpoint"], weights_only=True)["global_step"] == 2
    (offline_run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert offline_run.name.endswith((tmp_path / "wandb_id.txt").read_text())
    assert not list((tmp_path / "wandb").glob("run-*"))  # no online run was attempted


def test_the_end_of_a_wandb_run_is_bounded(tmp_path, monkeypatch):
    """A server that hangs after the run started would hold the job at wandb.finish() until its time limit; the
    logger's run waits at most logger.wandb.finish_timeout for its uploads (the rest stays in the run's files)."""
    from guidelab.apps.loggers import make_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config("train", [*tiny_train_overrides(tmp_path, "ddpm"), "logger=wandb",
                                   "logger.wandb.finish_timeout=42"])
    (logger,) = make_loggers(cfg, tmp_path)
    try:
        assert logger.experiment.settings.finish_timeout == 42
        assert logger.experiment.settings.init_timeout == cfg.logger.wandb.init_timeout
    finally:
        logger.experiment.finish()


class AnswersButNeverStartsRuns(http.server.BaseHTTPRequestHandler):
    """Answers the reachability probe, then hangs on every API call (as an overloaded server would)."""

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def do_POST(self):
        time.sleep(300)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_wandb_start_up_is_bounded_by_init_timeout(tmp_path):
    """The server answers but never starts the run: wandb.init gives up after WANDB_INIT_TIMEOUT and the run goes on
    offline, so the checkpoints appear within a bounded time."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AnswersButNeverStartsRuns)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
           "WANDB_INIT_TIMEOUT": "5", "NETRC": str(tmp_path / "no-netrc"), "WANDB_MODE": None}
    run_dir = tmp_path / "run"
    proc = start(["task=eval_classifier", f"hydra.run.dir={run_dir}", "logger=wandb", "+trainer.limit_train_batches=2",
                  "trainer.max_epochs=1", "+trainer.limit_val_batches=1", "trainer.enable_model_summary=false"],
                 tmp_path, env)
    tic = time.time()
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), proc, timeout=150)
        elapsed = time.time() - tic
    finally:
        proc.kill()
        out = proc.communicate()[0]
        server.shutdown()
    assert "could not start online within 5 s" in out
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert elapsed < 120, elapsed


def test_resume_checks_then_init_from_fine_tunes_under_a_new_recipe(tmp_path):
    first = train(compose_config("train", tiny_train_overrides(tmp_path / "linear", "ddpm", steps=2)))["last_checkpoint"]
    saved = Path(first).read_bytes()
    resumed = train(compose_config("train", [*tiny_train_overrides(tmp_path / "resumed", "ddpm", steps=2),
                                             "trainer.max_epochs=2", f"ckpt_path={first}"]))
    assert torch.load(resumed["last_checkpoint"], weights_only=True)["global_step"] == 4  # continued from step 2
    tuned = train(compose_config("train", [*tiny_train_overrides(tmp_path / "cosine", "ddpm", steps=2),
                                           "diffusion=cosine", f"init_from={first}"]))
    raw = torch.load(tuned["last_checkpoint"], weights_only=True)
    assert raw["global_step"] == 2 and raw["hyper_parameters"]["schedule"]["kind"] == "cosine"  # a fresh run
    assert Path(first).read_bytes() == saved
