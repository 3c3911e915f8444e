import math

import pytest
import torch

from guidelab.diffusion import NoiseSchedule, spaced_timesteps


@pytest.mark.parametrize("make", [lambda: NoiseSchedule.linear(1000), lambda: NoiseSchedule.cosine(1000)])
def test_schedule_attributes(make):
    s = make()
    assert s.T == 1000 and s.num_steps == 1000
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.dtype == torch.float64
    assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1])
    assert s.alphas_cumprod[-1] < 1e-3
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))


def test_linear_endpoints_and_cosine_formula():
    lin = NoiseSchedule.linear(500, beta_start=2e-4, beta_end=0.03)
    assert lin.betas[0].item() == pytest.approx(2e-4) and lin.betas[-1].item() == pytest.approx(0.03)
    cos = NoiseSchedule.cosine(1000, s=0.008)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (0, 100, 500, 900):
        assert cos.alphas_cumprod[t].item() == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)


def test_q_sample_statistics():
    s = NoiseSchedule.linear(1000)
    torch.manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    for t in (0, 250, 999):
        xt = s.q_sample(x0, torch.full((len(x0),), t))
        abar = s.alphas_cumprod[t].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=5e-3)
        assert xt.var().item() == pytest.approx(1 - abar, rel=2e-2, abs=1e-5)


def test_q_sample_uses_given_noise():
    s = NoiseSchedule.cosine(100)
    x0, noise, t = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 10, 50, 99])
    abar = s.alphas_cumprod[t].float()[:, None]
    assert torch.allclose(s.q_sample(x0, t, noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise)


@pytest.mark.parametrize("schedule", [NoiseSchedule.linear(1000), NoiseSchedule.cosine(200).respace(37)])
def test_posterior_matches_bayes(schedule):
    """q(x_{t-1} | x_t, x0) from the product of q(x_{t-1} | x0) and q(x_t | x_{t-1})."""
    x0 = torch.tensor([[0.3]], dtype=torch.float64)
    xt = torch.tensor([[-1.1]], dtype=torch.float64)
    for i in (1, 5, schedule.num_steps // 2, schedule.num_steps - 1):
        a, ab_prev = schedule.alphas[i], schedule.alphas_cumprod_prev[i]
        precision = 1 / (1 - ab_prev) + a / (1 - a)
        var = 1 / precision
        mean = var * (ab_prev.sqrt() * x0 / (1 - ab_prev) + a.sqrt() * xt / (1 - a))
        m, v, logv = schedule.posterior(x0, xt, torch.tensor([i]))
        assert m.item() == pytest.approx(mean.item(), rel=1e-9)
        assert v.item() == pytest.approx(var.item(), rel=1e-9)
        assert logv.item() == pytest.approx(math.log(var.item()), rel=1e-9)


def test_predict_x0_inverts_q_sample():
    s = NoiseSchedule.linear(1000)
    x0, noise, t = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64), torch.arange(8) * 100
    xt = s.q_sample(x0, t, noise)
    assert torch.allclose(s.predict_x0(xt, t, noise), x0)
    assert torch.allclose(s.predict_eps(xt, t, x0), noise)


def test_respacing_keeps_alphas_cumprod():
    base = NoiseSchedule.linear(1000)
    r = base.respace(50)
    assert r.num_steps == 50 and r.T == 1000 and r.is_respaced
    assert r.timesteps[0] == 0 and r.timesteps[-1] == 999
    assert torch.allclose(r.alphas_cumprod, base.alphas_cumprod[r.timesteps])
    assert torch.allclose(torch.cumprod(1 - r.betas, 0), r.alphas_cumprod)
    explicit = base.respace([0, 10, 500, 999])
    assert explicit.timesteps.tolist() == [0, 10, 500, 999]
    assert torch.allclose(explicit.alphas_cumprod, base.alphas_cumprod[[0, 10, 500, 999]])
    # respacing twice composes timesteps onto the ORIGINAL index space
    twice = r.respace([0, 49])
    assert twice.timesteps.tolist() == [0, 999] and twice.T == 1000
    full = base.respace(1000)
    assert torch.allclose(full.betas, base.betas)


def test_spaced_timesteps_and_errors():
    assert spaced_timesteps(10, 10) == list(range(10))
    assert spaced_timesteps(1000, 4) == [0, 333, 666, 999]
    with pytest.raises(ValueError, match="steps"):
        spaced_timesteps(100, 0)
    with pytest.raises(ValueError, match="steps"):
        spaced_timesteps(100, 101)
    with pytest.raises(ValueError, match="unknown schedule"):
        NoiseSchedule.from_config("quadratic", 10)
    with pytest.raises(ValueError, match="T must be"):
        NoiseSchedule.linear(0)
    with pytest.warns(UserWarning, match="far from"):
        NoiseSchedule.linear(50)


def test_config_round_trip():
    s = NoiseSchedule.cosine(400, s=0.01)
    again = NoiseSchedule.from_config(**s.to_config())
    assert again.to_config() == s.to_config() == {"kind": "cosine", "T": 400, "s": 0.01, "max_beta": 0.999}
    assert torch.equal(again.betas, s.betas)
