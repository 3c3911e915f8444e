"""FusedEMA keeps the semantics of Lightning's EMAWeightAveraging: same averages, same checkpoint layout,
EMA weights during validation, both weight sets restored on resume."""

import pytorch_lightning as pl
import pytest
import torch
from conftest import compose_config, tiny_train_overrides

import guidelab.apps.train as train_app
from guidelab.apps.train import train
from guidelab.callbacks import FusedEMA
from guidelab.data import DigitsDataModule
from guidelab.modules import DDPMModule

NET = {"_target_": "guidelab.nets.UNet", "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
       "attention_resolutions": [4], "num_heads": 2, "dropout": 0.0, "groups": 4}


def tiny_module() -> DDPMModule:
    return DDPMModule(net=NET, schedule={"kind": "linear", "T": 1000}, image_shape=[1, 8, 8], lr=1e-3, warmup_steps=1)


def fit(callbacks, steps=4, ckpt_path=None, root=None):
    pl.seed_everything(0)
    module = tiny_module()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=-1, max_steps=steps, limit_train_batches=2, limit_val_batches=1,
                         logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         default_root_dir=root, enable_checkpointing=root is not None)
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=16), ckpt_path=ckpt_path)
    return module, trainer


def test_same_average_and_checkpoint_as_lightnings_ema(tmp_path, monkeypatch):
    saved = {}
    for name, make in [("ours", FusedEMA), ("lightning", pl.callbacks.EMAWeightAveraging)]:
        monkeypatch.setattr(train_app, "FusedEMA", lambda decay, make=make: make(decay=decay))
        out = tmp_path / name
        cfg = compose_config("train", [*tiny_train_overrides(out, "ddpm", steps=5), "task.ema.decay=0.9"])
        saved[name] = torch.load(train(cfg)["last_checkpoint"], weights_only=True)
    ours, theirs = saved["ours"], saved["lightning"]
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key in ("state_dict", "current_model_state"):
        for name, value in theirs[key].items():
            assert torch.allclose(ours[key][name], value, rtol=1e-5, atol=1e-6), (key, name)
    # the average really differs from the raw weights (decay 0.9 over 5 steps)
    assert any(not torch.allclose(ours["state_dict"][k], ours["current_model_state"][k]) for k in ours["state_dict"])


class ValidationProbe(pl.Callback):
    """Records, at each validation batch, whether the module holds the EMA weights."""

    def __init__(self, ema: FusedEMA):
        self.ema, self.seen, self.raw_before = ema, [], None

    def on_validation_epoch_start(self, trainer, pl_module):
        self.raw_before = self.ema._swapped_out

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        ema = self.ema.ema_state
        self.seen.append(all(torch.equal(p, ema[n]) for n, p in pl_module.named_parameters()))

    def on_validation_end(self, trainer, pl_module):
        if self.raw_before is not None and trainer.global_step > 0:
            params = dict(pl_module.named_parameters())
            assert all(torch.equal(params[n], r) for n, r in zip(self.ema._names, self.raw_before))


def test_validation_sees_ema_weights_then_raw_weights_return():
    ema = FusedEMA(decay=0.5)
    probe = ValidationProbe(ema)
    module, _ = fit([ema, probe], steps=4)
    assert probe.seen and all(probe.seen)
    assert ema.updates == 4
    ema_state = ema.ema_state
    assert all(torch.equal(p, ema_state[n]) for n, p in module.named_parameters())  # EMA kept after training


def test_update_is_copy_then_lerp():
    module = tiny_module()
    ema = FusedEMA(decay=0.75)
    ema.on_fit_start(None, module)
    param = next(module.parameters())
    with torch.no_grad():
        param.fill_(2.0)
        ema.update()  # first update copies
        assert torch.equal(ema._ema[0], param)
        param.fill_(6.0)
        ema.update()  # 0.75 * 2 + 0.25 * 6
    assert torch.allclose(ema._ema[0], torch.full_like(param, 3.0))


def test_resume_restores_raw_weights_ema_and_count(tmp_path):
    ema = FusedEMA(decay=0.5)
    fit([ema], steps=4, root=tmp_path)
    ckpt_path = tmp_path / "checkpoints"
    (ckpt,) = list(ckpt_path.glob("*.ckpt"))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["global_step"] == 4

    restored = {}

    class AtStart(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            restored["raw"] = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
            restored["ema"] = {n: t.clone() for n, t in resumed.ema_state.items()}
            restored["updates"] = resumed.updates

    resumed = FusedEMA(decay=0.5)
    fit([resumed, AtStart()], steps=6, ckpt_path=str(ckpt), root=tmp_path / "again")
    for name, value in restored["raw"].items():
        assert torch.equal(value, saved["current_model_state"][name]), name
        assert torch.equal(restored["ema"][name], saved["state_dict"][name]), name
    assert restored["updates"] == 4 and resumed.updates == 6


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_bad_decay_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        FusedEMA(decay=decay)


def test_progress_bar_reads_metrics_only_every_n_steps(monkeypatch):
    """Reading the bar's metrics syncs with the device: RichProgressBarEveryN does it every N train steps."""
    from guidelab.callbacks import RichProgressBarEveryN

    reads = []
    monkeypatch.setattr(RichProgressBarEveryN, "get_metrics",
                        lambda self, trainer, pl_module: reads.append((trainer.global_step, trainer.training)) or {})
    pl.seed_everything(0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=6, limit_train_batches=6, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[RichProgressBarEveryN(metrics_every_n_steps=3)])
    trainer.fit(tiny_module(), datamodule=DigitsDataModule(batch_size=16))
    assert sorted({step for step, training in reads if training}) == [3, 6]


@pytest.mark.parametrize("max_epochs, max_steps", [(-1, 6), (3, -1)])
def test_progress_bar_describes_the_runs_bound(max_epochs, max_steps):
    """A run bounded by max_steps names its step out of max_steps (refreshed with the metrics), never Lightning
    2.6's "Epoch 2/-2"; a run bounded by epochs keeps "Epoch 2/2"."""
    from guidelab.callbacks import RichProgressBarEveryN

    bar = RichProgressBarEveryN(metrics_every_n_steps=3)
    seen = []

    class ReadBar(pl.Callback):  # after the bar (callbacks run in order): what it shows at each batch end
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            task = next(t for t in bar.progress.tasks if t.id == bar.train_progress_bar_id)
            seen.append((trainer.global_step, task.description.strip()))

    pl.seed_everything(0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, max_steps=max_steps, limit_train_batches=2,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[bar, ReadBar()])
    trainer.fit(tiny_module(), datamodule=DigitsDataModule(batch_size=16))
    if max_steps > 0:
        # epoch starts (steps 0, 2, 4) and metric refreshes (steps 3, 6) set the step; in between it stands
        assert seen == [(1, "Epoch 0, step 0/6"), (2, "Epoch 0, step 0/6"), (3, "Epoch 1, step 3/6"),
                        (4, "Epoch 1, step 3/6"), (5, "Epoch 2, step 4/6"), (6, "Epoch 2, step 6/6")]
    else:
        assert [d for _, d in seen] == ["Epoch 0/2"] * 2 + ["Epoch 1/2"] * 2 + ["Epoch 2/2"] * 2


@pytest.mark.parametrize("every_s, lines", [(0.0, ["Epoch 0, step 2/6", "Epoch 1, step 3/6", "Epoch 1, step 4/6",
                                                  "Epoch 2, step 6/6"]),
                                           (3600.0, ["Epoch 2, step 6/6"])])
def test_progress_bar_prints_plain_lines_into_a_log_file(every_s, lines):
    """Written to a file, Rich would draw the bar once, when it stops, folded to 80 columns; there the bar prints
    plain lines instead: one at a metrics refresh, at most every `log_lines_every_s` seconds, so a SLURM log shows
    how far a run has come, and one as training ends."""
    import io

    import rich

    from guidelab.callbacks import RichProgressBarEveryN

    log = io.StringIO()
    bar = RichProgressBarEveryN(metrics_every_n_steps=3, log_lines_every_s=every_s,
                                console_kwargs={"file": log, "force_terminal": False, "width": 100})
    pl.seed_everything(0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=-1, max_steps=6, limit_train_batches=2, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_model_summary=False, callbacks=[bar])
    try:
        trainer.fit(tiny_module(), datamodule=DigitsDataModule(batch_size=16))
    finally:
        rich.reconfigure()  # the bar configured Rich's global console with our file
    plain = [line for line in log.getvalue().splitlines() if "steps/s" in line]
    # at the refreshes (every 3 steps and the epoch ends 2, 4), and as training ends (6, unless just printed)
    assert [line.split(" | ")[0] for line in plain] == lines
    assert all("train/loss: " in line and "v_num" not in line for line in plain)
    assert "━" not in log.getvalue()  # no folded frame of the Rich bar
    with pytest.raises(ValueError, match="log_lines_every_s"):
        RichProgressBarEveryN(log_lines_every_s=-1)
