"""Scale schedules and guidance intervals from the sweep settings to the sampler, the JSON and W&B."""

import json

import pytest
import torch
from torch import nn

from gaussian_mixture import GaussianMixture
from guidelab.diffusion import NoiseSchedule
from guidelab.diffusion.scale_schedules import SCALE_SCHEDULES, scheduled_scale
from guidelab.evaluation.guided_sweep import SweepSettings, run_guided_sweep
from guidelab.evaluation.report import _wandb_payload, scale_schedule_label, write_report
from guidelab.evaluation.result import SweepResult

T = 1000


@pytest.mark.parametrize("name", sorted(SCALE_SCHEDULES))
def test_every_schedule_averages_one_over_t(name):
    values = torch.tensor([SCALE_SCHEDULES[name](t / T) for t in range(T)])
    assert values.mean() == pytest.approx(1.0, abs=2e-3)
    assert (values >= 0).all()


def test_schedule_values():
    w = torch.tensor([0.0, 2.0])
    assert scheduled_scale(w, "constant", T) is w
    assert torch.allclose(scheduled_scale(w, "linear", T)(0), torch.tensor([0.0, 4.0]))
    assert torch.allclose(scheduled_scale(w, "linear", T)(500), torch.tensor([0.0, 2.0]))
    assert torch.allclose(scheduled_scale(w, "cosine", T)(500), torch.tensor([0.0, 2.0]), atol=1e-6)
    assert torch.allclose(scheduled_scale(w, "cosine", T)(999), torch.tensor([0.0, 0.0]), atol=1e-4)
    with pytest.raises(ValueError, match="unknown scale schedule 'step'"):
        scheduled_scale(w, "step", T)


@pytest.mark.parametrize("kwargs,match", [(dict(scale_schedule="exp"), "scale_schedule"),
                                          (dict(interval=[500, 100]), "interval"),
                                          (dict(interval=[1, 2, 3]), "interval")])
def test_settings_refuse_bad_schedules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SweepSettings(**kwargs)


def test_interval_beyond_T_refused_before_sampling():
    with pytest.raises(ValueError, match="interval"):
        SweepSettings(interval=[1200, 1500]).check_steps(1000)


class NoMetrics:
    def reset_fake(self):
        pass

    def update_fake(self, images, targets):
        pass

    def compute(self):
        return {"fid": 0.0, "accuracy": 0.0, "precision": 1.0, "recall": 1.0}


class Spy(nn.Module):
    """An oracle net that records the (timestep, rows) it is called with."""

    def __init__(self, fn, num_classes=None):
        super().__init__()
        self.fn, self.calls = fn, []
        self.anchor = nn.Parameter(torch.zeros(()))
        if num_classes:
            self.num_classes = num_classes

    def forward(self, x, t):
        self.calls.append((int(t[0]), len(x)))
        return self.fn(x, t)


@pytest.fixture(scope="module")
def oracle():
    return GaussianMixture(NoiseSchedule.linear(T), [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], [0.3] * 3, [0.5, 0.3, 0.2])


def sweep(oracle, **kw):
    classifier = Spy(oracle.classify, num_classes=3)
    settings = SweepSettings(scales=[0.0, 2.0], samples_per_scale=6, batch_size=12, steps=10, clip_denoised=False,
                             **kw)
    result = run_guided_sweep(Spy(oracle.eps), classifier, oracle.schedule, (2,), 3, NoMetrics(), settings,
                              device="cpu", progress=False)
    return result, classifier.calls


def test_sweep_interval_and_schedule_reach_the_sampler(oracle):
    constant, calls = sweep(oracle)
    assert len(calls) == 10 and all(rows == 6 for _, rows in calls)  # the w=0 half never reaches the classifier
    inside, calls = sweep(oracle, interval=[0, 499])
    assert calls and all(t <= 499 for t, _ in calls) and len(calls) == 5
    linear, _ = sweep(oracle, scale_schedule="linear")
    assert linear.settings["scale_schedule"] == "linear" and inside.settings["interval"] == [0, 499]
    # w=0 samples are the same whatever the schedule; guided ones move
    assert torch.equal(linear.grids[0.0], constant.grids[0.0])
    assert not torch.allclose(linear.grids[2.0], constant.grids[2.0])
    assert not torch.allclose(inside.grids[2.0], constant.grids[2.0])


def test_schedule_recorded_in_json_and_wandb_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    rows = [{"scale": w, "fid": 1.0, "accuracy": 0.5, "precision": 0.5, "recall": 0.5, "samples_per_s": 1.0}
            for w in (0.0, 1.0)]
    result = SweepResult(rows=rows, settings={"scale_schedule": "cosine", "interval": [200, 800]},
                         timings={}, grids={}, trajectory={})
    doc = json.loads(write_report(result, tmp_path)["quality_diversity.json"].read_text())
    assert doc["settings"]["scale_schedule"] == "cosine" and doc["settings"]["interval"] == [200, 800]
    table = _wandb_payload(result, "guidance")["guidance/table"]
    assert table.columns[-1] == "scale_schedule"
    assert [row[-1] for row in table.data] == ["cosine, t in [200, 800]"] * 2
    assert scale_schedule_label({}) == "constant"
