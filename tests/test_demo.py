"""guidelab-demo's budget: applied to each stage, and the user's stage overrides still win."""

from types import SimpleNamespace

import guidelab.apps.demo as demo


def test_demo_budget_applies_and_user_overrides_win(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_train(cfg):
        seen[cfg.task.name] = cfg
        return {"last_checkpoint": str(tmp_path / f"{cfg.task.name}.ckpt")}

    def fake_sweep(cfg):
        seen["sweep"] = cfg
        return SimpleNamespace(rows=[]), {"quality_diversity.json": str(tmp_path / "qd.json")}

    monkeypatch.setattr(demo, "train", fake_train)
    monkeypatch.setattr(demo, "run_sweep", fake_sweep)
    monkeypatch.setattr(demo, "print_table", lambda *args, **kwargs: None)
    demo.run_demo(["--out", str(tmp_path), "--logger", "none", "ddpm.trainer.max_steps=7", "sweep.guidance.steps=9"])
    assert seen["classifier"].trainer.max_steps == 600
    assert seen["ddpm"].trainer.max_steps == 7  # the user's override after the budget
    assert seen["eval_classifier"].trainer.max_epochs == 30  # the recipe's own
    assert seen["sweep"].guidance.samples_per_scale == 300 and seen["sweep"].guidance.steps == 9
    out = capsys.readouterr().out.splitlines()  # as a log file gets them: whole lines, however long the path
    assert f"quality_diversity.json: {tmp_path / 'qd.json'}" in out
    assert any(line.startswith("stage timings (s): train_eval_classifier_s=") and "total_s=" in line for line in out)
