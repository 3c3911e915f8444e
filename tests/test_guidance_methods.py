"""Every guidance method on the analytic Gaussian-mixture oracle: scale 0 is the unguided sampler exactly,
closed-form targets where they exist, accuracy rising with the scale, mismatched nets refused up front."""

import pytest
import torch

from gaussian_mixture import MEANS, STDS, TARGET, WEIGHTS, GaussianMixture
from guidelab.diffusion import (
    Autoguidance,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    CleanClassifierGuidance,
    Composite,
    GuidanceInterval,
    ManifoldConstrained,
    NoiseSchedule,
    ProjectedGuidance,
    sample,
)

NULL = 3


@pytest.fixture(scope="module")
def oracle():
    return GaussianMixture(NoiseSchedule.linear(1000), MEANS, STDS, WEIGHTS)


@pytest.fixture(scope="module")
def weak(oracle):
    """A worse model of the same data: the mixture with blurred components (same schedule)."""
    return GaussianMixture(oracle.schedule, MEANS, [0.9] * 3, WEIGHTS)


class ConditionalOracle:
    """eps(x_t | y) of one component, and of the whole mixture for y = NULL: a perfect CFG model."""

    def __init__(self, oracle):
        self.oracle, self.num_classes = oracle, len(WEIGHTS)

    def __call__(self, x, t, y=None):
        mixture = self.oracle.eps(x, t)
        if y is None:
            return mixture
        abar, centers, variances = self.oracle._noised(t)
        k = y.clamp(max=self.num_classes - 1)
        center = centers.gather(2, k[:, None, None].expand(-1, x.shape[1], 1)).squeeze(2)
        eps_k = (1 - abar).sqrt() * (x - center) / variances.gather(1, k[:, None])
        return torch.where((y == NULL)[:, None], mixture, eps_k)


def clean_classify(oracle):
    return lambda x, t: oracle.classify(x, torch.zeros_like(t))


def methods(oracle, weak):
    """name -> (guidance, eps-model, sampler) for every method."""
    cg = ClassifierGuidance(oracle.classify)
    return {
        "cg": (cg, oracle.eps, "ddim"),
        "cg_mean": (ClassifierGuidance(oracle.classify, form="mean"), oracle.eps, "ddpm"),
        "cfg": (ClassifierFreeGuidance(NULL), ConditionalOracle(oracle), "ddim"),
        "interval": (GuidanceInterval(cg, 0, 600), oracle.eps, "ddim"),
        "cgpp": (ManifoldConstrained(cg), oracle.eps, "ddim"),
        "projected": (ProjectedGuidance(cg, parallel_weight=0.0, max_norm=2.0), oracle.eps, "ddim"),
        "clean_x0": (CleanClassifierGuidance(clean_classify(oracle), num_classes=3), oracle.eps, "ddim"),
        "clean_x0_dps": (CleanClassifierGuidance(clean_classify(oracle), through_model=True, num_classes=3),
                         oracle.eps, "ddim"),
        "autoguidance": (Autoguidance(weak.eps), oracle.eps, "ddim"),
        "autoguidance+cg": (Composite([Autoguidance(weak.eps), cg]), oracle.eps, "ddim"),
    }


NAMES = ["cg", "cg_mean", "cfg", "interval", "cgpp", "projected", "clean_x0", "clean_x0_dps", "autoguidance",
         "autoguidance+cg"]


def draw(oracle, weak, name, scale, n=600, steps=25, seed=0, **kw):
    guidance, model, sampler = methods(oracle, weak)[name]
    return sample(model, oracle.schedule, (n, 2), guidance=guidance, y=torch.full((n,), TARGET), scale=scale,
                  steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(seed), **kw)


def unguided(oracle, sampler, n=600, steps=25, seed=0, **kw):
    return sample(oracle.eps, oracle.schedule, (n, 2), steps=steps, sampler=sampler,
                  generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_scale_zero_is_the_unguided_sampler_exactly(oracle, weak, name, clip):
    x = draw(oracle, weak, name, 0.0, n=64, steps=10, clip_denoised=clip)
    assert torch.equal(x, unguided(oracle, methods(oracle, weak)[name][2], n=64, steps=10, clip_denoised=clip))


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_rises_with_scale(oracle, weak, name):
    if name == "autoguidance":  # unconditional: it sharpens, it does not pick a class
        spread = [draw(oracle, weak, name, w)[oracle.label(draw(oracle, weak, name, w)) == 0].std(0).mean()
                  for w in (0.0, 1.0)]
        assert spread[1] < spread[0]
        return
    hits = [(oracle.label(draw(oracle, weak, name, w)) == TARGET).float().mean().item() for w in (0.0, 1.0, 3.0)]
    assert hits[0] < 0.4 and hits[1] > hits[0] + 0.2 and hits[2] >= hits[1] - 0.02, hits


def test_cfg_exact_at_scale_one(oracle, weak):
    """A perfect conditional model at w=1 samples the target component: mean and spread on target."""
    guidance, model, _ = methods(oracle, weak)["cfg"]
    x = sample(model, oracle.schedule, (2000, 2), guidance=guidance, y=torch.full((2000,), TARGET), scale=1.0,
               generator=torch.Generator().manual_seed(0))
    assert (oracle.label(x) == TARGET).float().mean() >= 0.99
    assert torch.allclose(x.mean(0), torch.tensor(MEANS[TARGET]), atol=0.05)
    assert x.std(0) == pytest.approx(torch.tensor(STDS[TARGET]).expand(2), rel=0.1)


def test_interval_is_inner_inside_and_unguided_outside(oracle):
    cg = ClassifierGuidance(oracle.classify)
    infos = []
    y = torch.full((50,), TARGET)
    sample(oracle.eps, oracle.schedule, (50, 2), guidance=GuidanceInterval(cg, 300, 700), y=y, scale=2.0, steps=10,
           sampler="ddim", callback=infos.append, generator=torch.Generator().manual_seed(0))
    inside = 0
    for info in infos:
        x, t = info["x"], info["timestep"]
        plain = oracle.eps(x, t)
        if 300 <= int(t[0]) <= 700:
            inside += 1
            grad = cg.log_prob_grad(type("S", (), {"x": x, "timestep": t, "y": y})())[0]
            sigma = oracle.schedule.sigma(t, x)
            assert torch.allclose(info["eps"], plain - 2.0 * sigma * grad, atol=1e-6)
            assert not torch.allclose(info["eps"], plain)
        else:
            assert torch.equal(info["eps"], plain) and info["grad"] is None
    assert 0 < inside < len(infos)
    everywhere = sample(oracle.eps, oracle.schedule, (50, 2), guidance=GuidanceInterval(cg, 0, 999), y=y, scale=2.0,
                        steps=10, sampler="ddim", generator=torch.Generator().manual_seed(0))
    assert torch.equal(everywhere, sample(oracle.eps, oracle.schedule, (50, 2), guidance=cg, y=y, scale=2.0, steps=10,
                                          sampler="ddim", generator=torch.Generator().manual_seed(0)))


def test_projection_with_full_parallel_weight_and_no_bound_is_the_inner_method(oracle):
    cg = ClassifierGuidance(oracle.classify)
    kw = dict(y=torch.full((100,), TARGET), scale=2.0, steps=10, sampler="ddim", noise=torch.randn(100, 2))
    inner = sample(oracle.eps, oracle.schedule, (100, 2), guidance=cg, **kw)
    projected = sample(oracle.eps, oracle.schedule, (100, 2), guidance=ProjectedGuidance(cg, parallel_weight=1.0), **kw)
    torch.testing.assert_close(projected, inner, atol=1e-4, rtol=1e-4)
    dropped = sample(oracle.eps, oracle.schedule, (100, 2), guidance=ProjectedGuidance(cg, parallel_weight=0.0), **kw)
    assert (dropped - inner).abs().max() > 1e-2


def test_cgpp_renoises_with_the_unguided_eps(oracle):
    cg = ClassifierGuidance(oracle.classify)
    infos = []
    y = torch.full((20,), TARGET)
    sample(oracle.eps, oracle.schedule, (20, 2), guidance=ManifoldConstrained(cg), y=y, scale=1.0, steps=5,
           sampler="ddim", callback=infos.append)
    first = infos[0]
    # x_{i-1} = sqrt(abar_prev) x0_hat(guided eps) + sqrt(1 - abar_prev) eps(x_t), checked on the first step
    abar_prev = oracle.schedule.alphas_cumprod[int(infos[1]["timestep"][0])].float()
    expected = abar_prev.sqrt() * first["x0"] + (1 - abar_prev).sqrt() * oracle.eps(first["x"], first["timestep"])
    torch.testing.assert_close(infos[1]["x"], expected, atol=1e-5, rtol=1e-5)


def test_autoguidance_with_itself_as_weak_model_is_unguided(oracle):
    kw = dict(steps=10, sampler="ddim", noise=torch.randn(30, 2), scale=3.0)
    assert torch.equal(sample(oracle.eps, oracle.schedule, (30, 2), guidance=Autoguidance(oracle.eps), **kw),
                       sample(oracle.eps, oracle.schedule, (30, 2), **{k: v for k, v in kw.items() if k != "scale"}))


def test_clean_x0_variants_differ_and_report_cost(oracle):
    infos = {}
    for through in (False, True):
        infos[through] = []
        sample(oracle.eps, oracle.schedule, (10, 2), guidance=CleanClassifierGuidance(clean_classify(oracle),
               through_model=through, num_classes=3), y=torch.full((10,), TARGET), scale=1.0, steps=5,
               sampler="ddim", noise=torch.randn(10, 2, generator=torch.Generator().manual_seed(0)),
               callback=infos[through].append)
    assert infos[False][0]["nfe"] == 3.0 and infos[True][0]["nfe"] == 4.0
    # same x_T, same first x0_hat; the gradients differ by the eps-model's Jacobian
    assert (infos[False][0]["grad"] - infos[True][0]["grad"]).abs().max() > 1e-3


class Module(torch.nn.Module):
    """A stand-in DDPM module carrying a schedule and an image shape, as the Lightning modules do."""

    def __init__(self, schedule, image_shape, eps):
        super().__init__()
        self.schedule, self.eps = schedule, eps
        self.hparams = type("H", (), {"image_shape": image_shape})()

    def forward(self, x, t):
        return self.eps(x, t)


@pytest.mark.parametrize("case", ["schedule", "shape", "cgpp_ddpm"])
def test_mismatched_nets_refused_before_sampling(oracle, case):
    calls = []
    model = Module(oracle.schedule, [2], lambda x, t: calls.append(1) or oracle.eps(x, t))
    kw = dict(steps=4, sampler="ddim", y=torch.zeros(3, dtype=torch.long), scale=1.0)
    if case == "schedule":
        guidance, match = Autoguidance(Module(NoiseSchedule.cosine(1000), [2], oracle.eps)), "schedule"
    elif case == "shape":
        guidance, match = Autoguidance(Module(oracle.schedule, [3], oracle.eps)), "shape"
    else:
        guidance, match = ManifoldConstrained(ClassifierGuidance(oracle.classify)), "sampler=ddim"
        kw["sampler"] = "ddpm"
    with pytest.raises(ValueError, match=match):
        sample(model, oracle.schedule, (3, 2), guidance=guidance, **kw)
    assert not calls


def test_methods_disagreeing_on_classes_refused(oracle):
    with pytest.raises(ValueError, match=r"class count: \[3, 10\]"):
        Composite([ClassifierGuidance(oracle.classify), CleanClassifierGuidance(clean_classify(oracle), num_classes=10)])
