"""Samplers: one loop (`sample`) and one small step function per sampler.

A step maps x at schedule index i to x at index i - 1, given the (already guided) eps and fresh
noise. Guidance happens in the loop, before the step, so every sampler gets it for free.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .guidance import Scale, cfg_combine, classifier_grad, guide_eps, scale_schedule
from .schedule import NoiseSchedule, _gather
from .solvers import dpm_solver_2m_step

__all__ = ["sample", "ddpm_step", "ddim_step", "SAMPLERS"]


def ddpm_step(schedule, i, x, eps, noise, *, clip_denoised=False, mean_shift=None, eta=None):
    """Ancestral step: x_{i-1} ~ N(mu(x_i, x0_hat), Sigma_i), Sigma_i the posterior variance."""
    t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
    x0 = schedule.predict_x0(x, t, eps)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    mean, variance, log_variance = schedule.posterior(x0, x, t)
    if mean_shift is not None:
        mean = mean + variance * mean_shift
    if i == 0:
        return mean, x0
    return mean + (0.5 * log_variance).exp() * noise, x0


def ddim_step(schedule, i, x, eps, noise, *, clip_denoised=False, mean_shift=None, eta=0.0):
    """Song et al. 2021; eta=0 is the deterministic ODE step, eta=1 matches DDPM's variance."""
    if mean_shift is not None:
        raise ValueError("form='mean' is defined for the ancestral sampler only; use form='eps' with DDIM")
    t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
    x0 = schedule.predict_x0(x, t, eps)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
        eps = schedule.predict_eps(x, t, x0)
    abar = _gather(schedule.alphas_cumprod, t, x)
    abar_prev = _gather(schedule.alphas_cumprod_prev, t, x)
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
    if i == 0 or eta == 0:
        return x_prev, x0
    return x_prev + sigma * noise, x0


SAMPLERS = {"ddpm": ddpm_step, "ddim": ddim_step, "dpm++2m": dpm_solver_2m_step}
FORMS = ("eps", "mean")
GUIDANCE = ("classifier", "cfg")


@torch.no_grad()
def sample(
    model,
    schedule: NoiseSchedule,
    shape,
    *,
    classifier=None,
    y: torch.Tensor | None = None,
    scale: Scale = 0.0,
    steps: int | None = None,
    sampler: str = "ddpm",
    eta: float = 0.0,
    form: str = "eps",
    clip_denoised: bool = False,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    noise: torch.Tensor | None = None,
    guidance: str = "classifier",
    null_class: int | None = None,
) -> torch.Tensor:
    """Draw samples from an eps-model, optionally guided.

    model(x_t, t) -> eps, classifier(x_t, t) -> logits, with `t` the ORIGINAL timestep index in
    [0, T) also on respaced steps. `scale` is a float, a tensor [B] or a callable of t (see
    `scale_schedule`). With guidance="cfg" the model is class-conditional, model(x_t, t, y) with
    y = null_class meaning unconditional, and no classifier is used.
    `callback(info)` is called after every step with the step's tensors, for diagnostics.
    `noise` fixes x_T (else drawn from `generator`).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    if form not in FORMS:
        raise ValueError(f"unknown guidance form {form!r}; choose one of {list(FORMS)}")
    if guidance not in GUIDANCE:
        raise ValueError(f"unknown guidance {guidance!r}; choose one of {list(GUIDANCE)}")
    if sampler == "dpm++2m" and eta != 0:
        raise ValueError(f"sampler='dpm++2m' is deterministic; eta must be 0, got {eta}")
    if form == "mean" and sampler != "ddpm":
        raise ValueError("form='mean' is defined for the ancestral sampler only; use form='eps' with DDIM")
    if not 0.0 <= eta:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if steps is not None and not (isinstance(steps, int) and 1 <= steps <= schedule.num_steps):
        raise ValueError(f"steps must be an int in [1, T={schedule.num_steps}], got {steps!r}")
    step = SAMPLERS[sampler]
    respace = getattr(step, "respace", NoiseSchedule.respace)  # the time grid the step function is made for
    run = schedule if steps is None or steps == schedule.num_steps else respace(schedule, steps)

    device = torch.device(device) if device is not None else _device_of(model)
    x = _initial_noise(shape, noise, generator, device)
    batch = x.shape[0]
    w_at = scale_schedule(scale, batch, device)
    conditional = classifier is not None or guidance == "cfg"
    if conditional:
        y = _check_labels(y, batch, device, _num_classes(classifier, model, guidance, null_class, x, run))
    if guidance == "cfg" and null_class is None:
        raise ValueError("guidance='cfg' needs null_class, the label index the model treats as unconditional")

    history = {}  # what a multistep solver carries from one step to the next
    indices = range(run.num_steps - 1, -1, -1)
    for i in _progress(indices, progress):
        t = torch.full((batch,), int(run.timesteps[i]), dtype=torch.long, device=device)
        w = w_at(int(run.timesteps[i]))
        grad = log_p = None
        if guidance == "cfg":
            eps = _cfg_eps(model, x, t, y, null_class, w)
        else:
            eps = model(x, t)
            if classifier is not None:
                grad, log_p = classifier_grad(classifier, x, t, y)
                if form == "eps":
                    eps = guide_eps(eps, grad, w, run.sigma(torch.full_like(t, i), x))
        mean_shift = None
        if form == "mean" and grad is not None:
            mean_shift = w.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) * grad
        x_next, x0 = step(
            run, i, x, eps, _randn(x.shape, generator, device), clip_denoised=clip_denoised, mean_shift=mean_shift, eta=eta,
            **history,
        )
        if getattr(step, "multistep", False):
            history = {"previous_x0": x0}
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0, "eps": eps, "scale": w, "grad": grad, "log_prob": log_p})
        x = x_next
    return x


def _cfg_eps(model, x, t, y, null_class, w):
    """Both conditional passes in one batched forward."""
    null = torch.full_like(y, null_class)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    eps_cond, eps_uncond = eps.chunk(2)
    return cfg_combine(eps_uncond, eps_cond, w)


def _initial_noise(shape, noise, generator, device):
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
        return noise.to(device)
    return _randn(tuple(shape), generator, device)


def _randn(shape, generator, device):
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _num_classes(classifier, model, guidance, null_class, x, run) -> int:
    net = classifier if guidance == "classifier" else model
    n = getattr(net, "num_classes", None)
    if n is None and guidance == "classifier":
        t = torch.full((x.shape[0],), int(run.timesteps[-1]), dtype=torch.long, device=x.device)
        n = classifier(x[:1], t[:1]).shape[-1]
    if n is None:
        return int(null_class) if null_class is not None else 2**62
    return int(n)


def _check_labels(y, batch, device, num_classes):
    if y is None:
        raise ValueError("y (target classes, LongTensor [B]) is required when guiding")
    y = torch.as_tensor(y, device=device)
    if y.dim() == 0:
        y = y.expand(batch)
    if y.shape != (batch,) or y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"y must be an integer tensor of shape [{batch}], got {tuple(y.shape)} {y.dtype}")
    if (y < 0).any() or (y >= num_classes).any():
        raise ValueError(f"y must lie in [0, num_classes={num_classes}), got values {y.min().item()}..{y.max().item()}")
    return y.long()


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _progress(indices, enabled):
    if not enabled:
        return indices
    from tqdm.auto import tqdm

    return tqdm(indices, desc="sampling", leave=False)
