"""Guided sampling against an exact Gaussian-mixture oracle (see gaussian_mixture.py)."""

import pytest
import torch

from gaussian_mixture import MEANS, STDS, TARGET, WEIGHTS, GaussianMixture
from guidelab.diffusion import NoiseSchedule, guidance_interval, sample

N = 3000


@pytest.fixture(scope="module")
def oracle():
    return GaussianMixture(NoiseSchedule.linear(1000), MEANS, STDS, WEIGHTS)


def run(oracle, scale, seed=0, n=N, **kw):
    return sample(
        oracle.eps,
        oracle.schedule,
        (n, 2),
        classifier=oracle.classify,
        y=torch.full((n,), TARGET),
        scale=scale,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


def assert_on_target(oracle, x, mean_tol=0.05, std_rel=0.1):
    in_class = oracle.label(x) == TARGET
    assert in_class.float().mean() >= 0.98
    chosen = x[in_class]
    assert torch.allclose(chosen.mean(0), torch.tensor(MEANS[TARGET]), atol=mean_tol)
    assert chosen.std(0) == pytest.approx(torch.tensor([STDS[TARGET]] * 2), rel=std_rel)


@pytest.mark.parametrize("form", ["eps", "mean"])
def test_scale_one_reproduces_class_conditional(oracle, form):
    assert_on_target(oracle, run(oracle, 1.0, form=form))


def test_scale_zero_reproduces_mixture_weights(oracle):
    x = run(oracle, 0.0)
    fractions = torch.bincount(oracle.label(x), minlength=3).float() / N
    assert torch.allclose(fractions, torch.tensor(WEIGHTS), atol=0.035)
    # unguided samples are unaffected by the classifier: same as sampling without one
    plain = sample(oracle.eps, oracle.schedule, (N, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, plain, atol=1e-5)


@pytest.mark.parametrize("sampler,steps,eta", [("ddim", 50, 0.0), ("ddim", 100, 1.0), ("ddpm", 100, 0.0)])
def test_respaced_steps_stay_on_target(oracle, sampler, steps, eta):
    x = run(oracle, 1.0, sampler=sampler, steps=steps, eta=eta)
    assert_on_target(oracle, x, mean_tol=0.06, std_rel=0.15)


def test_respaced_model_sees_original_timesteps(oracle):
    seen = []
    sample(lambda x, t: seen.append(t[0].item()) or torch.zeros_like(x), oracle.schedule, (2, 2), steps=5)
    assert seen == [999, 749, 500, 250, 0]


@pytest.mark.parametrize("form", ["eps", "mean"])
def test_negative_scale_pushes_away(oracle, form):
    x = run(oracle, -1.0, form=form, n=1000)
    assert (oracle.label(x) == TARGET).float().mean() < 0.05


def test_sharper_scale_concentrates(oracle):
    x = run(oracle, 4.0)
    chosen = x[oracle.label(x) == TARGET]
    assert (oracle.label(x) == TARGET).float().mean() >= 0.99
    assert (chosen.std(0) < STDS[TARGET]).all()


def test_per_sample_scales_match_separate_calls_exactly(oracle):
    """Deterministic DDIM from the same x_T: one batch with many scales == one call per scale."""
    n = 64
    noise = torch.randn(3 * n, 2, generator=torch.Generator().manual_seed(1))
    scales = torch.tensor([0.0, 1.0, -1.0]).repeat_interleave(n)
    kw = dict(classifier=oracle.classify, y=torch.full((3 * n,), TARGET), sampler="ddim", steps=25)
    batched = sample(oracle.eps, oracle.schedule, (3 * n, 2), scale=scales, noise=noise, **kw)
    for k, w in enumerate([0.0, 1.0, -1.0]):
        part = slice(k * n, (k + 1) * n)
        alone = sample(
            oracle.eps, oracle.schedule, (n, 2), scale=w, noise=noise[part],
            classifier=oracle.classify, y=torch.full((n,), TARGET), sampler="ddim", steps=25,
        )
        assert torch.allclose(batched[part], alone, atol=1e-5)


def test_per_sample_scales_statistics_ddpm(oracle):
    scales = torch.tensor([0.0, 1.0]).repeat_interleave(N)
    x = sample(
        oracle.eps, oracle.schedule, (2 * N, 2), classifier=oracle.classify, y=torch.full((2 * N,), TARGET),
        scale=scales, generator=torch.Generator().manual_seed(2),
    )
    unguided, guided = x[:N], x[N:]
    assert (oracle.label(unguided) == TARGET).float().mean() == pytest.approx(WEIGHTS[TARGET], abs=0.035)
    assert_on_target(oracle, guided)


def test_time_dependent_scale(oracle):
    # guidance decides the class in the low-noise half; in the noisiest half alone it only tilts the odds;
    # guiding nowhere equals unguided
    low_noise = run(oracle, guidance_interval(1.0, 0, 499), n=1000)
    assert (oracle.label(low_noise) == TARGET).float().mean() >= 0.9
    high_noise = (oracle.label(run(oracle, guidance_interval(1.0, 500, 999), n=1000)) == TARGET).float().mean()
    assert WEIGHTS[TARGET] + 0.05 < high_noise < 0.9
    nowhere = run(oracle, guidance_interval(5.0, 2000, 3000), n=200, steps=20)
    assert torch.allclose(nowhere, run(oracle, 0.0, n=200, steps=20), atol=1e-5)
    callable_scale = run(oracle, lambda t: 1.0, n=200, steps=20, sampler="ddim")
    assert torch.allclose(callable_scale, run(oracle, 1.0, n=200, steps=20, sampler="ddim"))


def test_generator_makes_runs_reproducible(oracle):
    a = run(oracle, 2.0, n=50, steps=10, seed=7)
    assert torch.equal(a, run(oracle, 2.0, n=50, steps=10, seed=7))
    assert not torch.equal(a, run(oracle, 2.0, n=50, steps=10, seed=8))


def test_callback_reports_every_step(oracle):
    infos = []
    run(oracle, 1.0, n=10, steps=7, callback=infos.append)
    assert [info["index"] for info in infos] == list(range(6, -1, -1))
    assert all(info["grad"].shape == (10, 2) and info["log_prob"].shape == (10,) for info in infos)
    # the classifier becomes sure of the target as guided sampling proceeds
    assert infos[-1]["log_prob"].exp().mean() > infos[0]["log_prob"].exp().mean()


def test_classifier_gradient_in_float32_without_model_grad(oracle):
    dtypes = []

    def classifier(x, t):
        dtypes.append((x.dtype, x.requires_grad, torch.is_grad_enabled()))
        return oracle.classify(x, t)

    def model(x, t):
        assert not torch.is_grad_enabled()
        return oracle.eps(x, t)

    sample(model, oracle.schedule, (4, 2), classifier=classifier, y=torch.zeros(4, dtype=torch.long), scale=1.0,
           steps=3, noise=torch.randn(4, 2, dtype=torch.float64))
    assert dtypes[-1] == (torch.float32, True, True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(y=torch.full((4,), 3)), "num_classes=3"),
        (dict(y=torch.full((4,), -1)), "num_classes"),
        (dict(y=None), "y"),
        (dict(scale=torch.ones(3)), "shape"),
        (dict(scale=float("nan")), "finite"),
        (dict(scale=torch.tensor([1.0, float("inf"), 1.0, 1.0])), "finite"),
        (dict(steps=0), "steps"),
        (dict(steps=1001), "steps"),
        (dict(sampler="euler"), "unknown sampler"),
        (dict(form="score"), "unknown guidance form"),
        (dict(form="mean", sampler="ddim"), "ancestral"),
        (dict(eta=-1.0), "eta"),
    ],
)
def test_clear_errors(oracle, kwargs, match):
    args = dict(classifier=oracle.classify, y=torch.zeros(4, dtype=torch.long), scale=1.0, steps=2)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        sample(oracle.eps, oracle.schedule, (4, 2), **args)


def test_classifier_free_guidance_combination():
    """CFG at scale 0 is the unconditional prediction, at 1 the conditional one."""
    schedule = NoiseSchedule.linear(100)

    def model(x, t, y):
        return torch.where((y == 5)[:, None], torch.zeros_like(x), torch.ones_like(x) * y[:, None].float())

    seen = {}

    def step_probe(info):
        seen.setdefault("eps", []).append(info["eps"])

    noise = torch.randn(3, 2)
    y = torch.tensor([1, 2, 3])
    for w, expected in [(0.0, torch.zeros(3, 2)), (1.0, y[:, None].float().expand(3, 2)), (2.0, 2 * y[:, None].float().expand(3, 2))]:
        seen.clear()
        sample(model, schedule, (3, 2), y=y, scale=w, guidance="cfg", null_class=5, steps=2, noise=noise, callback=step_probe)
        assert torch.allclose(seen["eps"][0], expected)
