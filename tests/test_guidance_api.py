"""The guidance interface: sample() hands every step to a Guidance object and knows no method by name."""

import pytest
import torch

from gaussian_mixture import MEANS, GaussianMixture
from guidelab.diffusion import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    Guidance,
    GuidedPrediction,
    NoiseSchedule,
    Unguided,
    sample,
)
from guidelab.diffusion.guidance import class_count


@pytest.fixture(scope="module")
def oracle():
    return GaussianMixture(NoiseSchedule.linear(200), MEANS, [0.3] * 3, [0.5, 0.3, 0.2])


class Recording(Guidance):
    """A user-written method: shifts eps by a constant times the scale, and records what it was given."""

    needs_labels = True
    num_classes = 3

    def __init__(self):
        self.seen = []

    def __call__(self, step):
        self.seen.append((step.index, step.timestep.clone(), step.scale.clone(), step.y.clone()))
        return GuidedPrediction(eps=step.model_eps() + step.scale[:, None], nfe=1.0)


def test_custom_guidance_object_drives_the_loop(oracle):
    method = Recording()
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1])
    scales = torch.tensor([0.0, 0.5, 1.0, 2.0])
    out = sample(oracle.eps, oracle.schedule, (4, 2), guidance=method, y=y, scale=lambda t: scales * (t / 100),
                 steps=4, sampler="ddim", noise=noise)
    assert [index for index, *_ in method.seen] == [3, 2, 1, 0]
    timesteps = [int(t[0]) for _, t, _, _ in method.seen]
    assert timesteps == [199, 133, 66, 0]
    for (_, t, w, seen_y), timestep in zip(method.seen, timesteps):
        torch.testing.assert_close(w, scales * (timestep / 100))  # per-sample, time-dependent scale
        assert torch.equal(seen_y, y)
    plain = sample(oracle.eps, oracle.schedule, (4, 2), steps=4, sampler="ddim", noise=noise)
    assert torch.equal(out[0], plain[0])  # row with scale 0: the shift is zero, so unguided exactly
    assert not torch.allclose(out[1:], plain[1:])


def test_classifier_keyword_is_classifier_guidance_object(oracle):
    kw = dict(y=torch.full((6,), 1), scale=torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, 4.0]), steps=5,
              generator=torch.Generator().manual_seed(3))
    simple = sample(oracle.eps, oracle.schedule, (6, 2), classifier=oracle.classify, **kw)
    kw["generator"] = torch.Generator().manual_seed(3)
    explicit = sample(oracle.eps, oracle.schedule, (6, 2), guidance=ClassifierGuidance(oracle.classify), **kw)
    assert torch.equal(simple, explicit)
    kw["generator"] = torch.Generator().manual_seed(3)
    mean_simple = sample(oracle.eps, oracle.schedule, (6, 2), classifier=oracle.classify, form="mean", **kw)
    kw["generator"] = torch.Generator().manual_seed(3)
    mean_object = sample(oracle.eps, oracle.schedule, (6, 2), guidance=ClassifierGuidance(oracle.classify, form="mean"),
                         **kw)
    assert torch.equal(mean_simple, mean_object)
    assert not torch.equal(simple, mean_simple)


def test_cfg_keyword_is_cfg_object():
    schedule = NoiseSchedule.linear(50)

    def model(x, t, y=None):
        return 0.1 * x + (y[:, None].float() if y is not None else 5.0)

    noise, y = torch.randn(3, 2), torch.tensor([0, 1, 4])
    kw = dict(y=y, scale=torch.tensor([0.0, 1.0, 3.0]), steps=4, sampler="ddim", noise=noise)
    shim = sample(model, schedule, (3, 2), guidance="cfg", null_class=5, **kw)
    assert torch.equal(shim, sample(model, schedule, (3, 2), guidance=ClassifierFreeGuidance(null_class=5), **kw))


def test_no_classifier_forward_to_count_classes(oracle):
    calls = []

    def classifier(x, t):  # a bare function: no num_classes attribute anywhere
        calls.append(len(x))
        return oracle.classify(x, t)

    sample(oracle.eps, oracle.schedule, (5, 2), classifier=classifier, y=torch.full((5,), 2), scale=1.0, steps=3)
    assert calls == [5, 5, 5]  # one guided forward per step, none to count classes
    with pytest.raises(ValueError, match=r"num_classes=3"):  # checked against the logits at the first step
        sample(oracle.eps, oracle.schedule, (2, 2), classifier=classifier, y=torch.tensor([0, 3]), scale=1.0, steps=3)


def test_class_count_sources(oracle):
    class Net(torch.nn.Module):
        num_classes = 7

    class Hparams:
        num_classes = 4

    class Module(torch.nn.Module):
        hparams = Hparams()

    assert class_count(Net()) == 7
    assert class_count(Module()) == 4
    assert class_count(oracle.classify) == 3  # a bound method: its owner's count
    assert class_count(lambda x, t: x) is None
    assert class_count(lambda x, t: x, 12) == 12
    assert ClassifierGuidance(Net()).num_classes == 7 and ClassifierGuidance(Net(), num_classes=9).num_classes == 9


def test_callback_reports_diagnostics(oracle):
    infos = []
    sample(oracle.eps, oracle.schedule, (3, 2), classifier=oracle.classify, y=torch.zeros(3, dtype=torch.long),
           scale=1.0, steps=4, callback=infos.append)
    assert [info["index"] for info in infos] == [3, 2, 1, 0]
    assert [int(info["timestep"][0]) for info in infos] == [199, 133, 66, 0]
    assert all(info["nfe"] == 3.0 and info["grad"].shape == (3, 2) for info in infos)
    infos.clear()
    sample(oracle.eps, oracle.schedule, (3, 2), steps=4, callback=infos.append)
    assert all(info["nfe"] == 1.0 and info["grad"] is None for info in infos)


def test_guided_rows_marks_zero_scale_rows(oracle):
    rows = []

    class Probe(Unguided):
        def __call__(self, step):
            rows.append(step.guided_rows().tolist())
            return super().__call__(step)

    sample(oracle.eps, oracle.schedule, (3, 2), guidance=Probe(), scale=torch.tensor([0.0, 1.0, -2.0]), steps=2)
    assert rows == [[False, True, True]] * 2


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(guidance=Unguided(), classifier=lambda x, t: x), ValueError, "inside the guidance object"),
        (dict(guidance="autoguidance"), ValueError, "unknown guidance"),
        (dict(guidance="cfg"), ValueError, "null_class"),
        (dict(formm="eps"), TypeError, "formm"),
        (dict(guidance=ClassifierGuidance(lambda x, t: x, form="mean"), sampler="ddim",
              y=torch.zeros(2, dtype=torch.long)), ValueError, "ancestral"),
        (dict(guidance=Recording()), ValueError, "y"),
    ],
)
def test_refused_before_sampling(oracle, kwargs, error, match):
    calls = []

    def model(x, t):
        calls.append(1)
        return oracle.eps(x, t)

    with pytest.raises(error, match=match):
        sample(model, oracle.schedule, (2, 2), steps=2, **kwargs)
    assert not calls


def test_multistep_solver_gets_fresh_state_per_call(oracle, monkeypatch):
    """A solver with history (e.g. DPM-Solver++(2M)) registers an object with for_run(schedule)."""
    from guidelab.diffusion import samplers

    class TwoStep:
        runs = []

        def for_run(self, schedule):
            history = []
            self.runs.append(history)

            def step(schedule, index, x, eps, noise, **kw):
                history.append(index)
                return samplers.ddim_step(schedule, index, x, eps, noise, **kw)

            return step

    monkeypatch.setitem(samplers.SAMPLERS, "two_step", TwoStep())
    noise = torch.randn(3, 2)
    first = sample(oracle.eps, oracle.schedule, (3, 2), steps=4, sampler="two_step", noise=noise)
    sample(oracle.eps, oracle.schedule, (3, 2), steps=3, sampler="two_step", noise=noise)
    assert TwoStep.runs == [[3, 2, 1, 0], [2, 1, 0]]
    assert torch.equal(first, sample(oracle.eps, oracle.schedule, (3, 2), steps=4, sampler="ddim", noise=noise))
