"""Scale schedules and guidance intervals from the sweep settings to the sampler, the JSON and W&B."""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf
from torch import nn

from gaussian_mixture import GaussianMixture
from guidelab.diffusion import ClassifierGuidance, NoiseSchedule
from guidelab.diffusion.scale_schedules import SCALE_SCHEDULES, scheduled_scale
from guidelab.evaluation.guidance_methods import SweepMethod
from guidelab.evaluation.guided_sweep import run_guided_sweep
from guidelab.evaluation.sweep_settings import SweepSettings
from guidelab.evaluation.report import jsonable, _table

T = 1000


def settings(**overrides) -> SweepSettings:
    """The shipped sweep settings (conf/sweep_settings/default.yaml) with `overrides`."""
    node = OmegaConf.to_container(compose_config("sweep", ["ddpm_checkpoint=a", "eval_classifier_checkpoint=b"])
                                  .guidance, resolve=True)
    return SweepSettings.from_config({**node, **overrides})


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
        settings(**kwargs)


def test_interval_beyond_T_refused_before_sampling():
    with pytest.raises(ValueError, match="interval"):
        settings(interval=[1200, 1500]).check_methods(NoiseSchedule.linear(1000), (1, 8, 8))


def test_shipped_defaults():
    shipped = settings()
    assert (shipped.scale_schedule, shipped.interval, shipped.fast_path) == ("constant", None, "auto")
    assert settings(interval=[200, 800], scale_schedule="cosine").scale_schedule_label() == "cosine, t in [200, 800]"


# the sweep's metrics interface, scoring nothing: these tests look at the samples
NO_METRICS = SimpleNamespace(reset_fake=lambda: None, update_fake=lambda images, targets: None, compute=dict)


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
    chosen = settings(scales=[0.0, 2.0], samples_per_scale=6, batch_size=12, steps=10, clip_denoised=False, **kw)
    method = SweepMethod("classifier", ClassifierGuidance(classifier), Spy(oracle.eps))
    result = run_guided_sweep({"classifier": method}, oracle.schedule, (2,), 3, NO_METRICS, chosen,
                              device="cpu", progress=False)
    return result, classifier.calls


def test_sweep_interval_and_schedule_reach_the_sampler(oracle):
    constant, calls = sweep(oracle)
    assert len(calls) == 10 and all(rows == 6 for _, rows in calls)  # the w=0 half never reaches the classifier
    inside, calls = sweep(oracle, interval=[0, 499])
    assert calls and all(t <= 499 for t, _ in calls) and len(calls) == 5
    linear, _ = sweep(oracle, scale_schedule="linear")
    assert linear.settings["scale_schedule"] == "linear" and inside.settings["interval"] == [0, 499]
    assert {row["scale_schedule"] for row in inside.rows} == {"constant, t in [0, 499]"}
    # w=0 samples are the same whatever the schedule; guided ones move
    grids = {name: result.grids["classifier"] for name, result in
             (("constant", constant), ("linear", linear), ("inside", inside))}
    assert torch.equal(grids["linear"][0.0], grids["constant"][0.0])
    assert not torch.allclose(grids["linear"][2.0], grids["constant"][2.0])
    assert not torch.allclose(grids["inside"][2.0], grids["constant"][2.0])


def test_schedule_recorded_in_json_and_wandb_table(oracle, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    result, _ = sweep(oracle, scale_schedule="cosine", interval=[200, 800])
    doc = json.loads(json.dumps(jsonable(result.to_json())))  # what write_report puts in quality_diversity.json
    assert doc["settings"]["scale_schedule"] == "cosine" and doc["settings"]["interval"] == [200, 800]
    table = _table(result.rows)
    assert table.columns[-1] == "scale_schedule"
    assert [row[-1] for row in table.data] == ["cosine, t in [200, 800]"] * 2


def test_sweep_batches_are_near_equal_and_within_batch_size(oracle):
    """35 samples at batch_size 16: three batches of 12 / 12 / 11 rows, not 16 / 16 / 3 (a compiled eps-model
    would meet a third batch shape and compile again)."""
    model = Spy(oracle.eps)
    chosen = settings(scales=[0.0, 1.0, 2.0, 4.0, 8.0], samples_per_scale=7, batch_size=16, steps=2,
                      clip_denoised=False)
    method = SweepMethod("classifier", ClassifierGuidance(oracle.classify, num_classes=3), model)
    run_guided_sweep({"classifier": method}, oracle.schedule, (2,), 3, NO_METRICS, chosen, device="cpu",
                     progress=False)
    assert sorted({rows for _, rows in model.calls}) == [11, 12]
    assert sum(rows for _, rows in model.calls) == 35 * 2  # every sample, every step


def test_samples_are_scored_in_batches_of_batch_size(oracle):
    """The metrics (Inception for FID on a GPU) see at most batch_size samples at a time, every sample once."""
    seen = []
    counting = SimpleNamespace(reset_fake=lambda: seen.append([]), compute=dict,
                               update_fake=lambda images, targets: seen[-1].append(len(images)))
    chosen = settings(scales=[0.0, 2.0], samples_per_scale=20, batch_size=8, steps=2, clip_denoised=False)
    method = SweepMethod("classifier", ClassifierGuidance(oracle.classify, num_classes=3), Spy(oracle.eps))
    run_guided_sweep({"classifier": method}, oracle.schedule, (2,), 3, counting, chosen, device="cpu", progress=False)
    assert seen == [[8, 8, 4], [8, 8, 4]]
