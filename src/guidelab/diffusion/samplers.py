"""Samplers: one loop (`sample`) and one small step function per sampler.

A step maps x at schedule index `index` to x at `index - 1`, given the (already guided) eps and
fresh noise. Guidance happens before the step, through a `Guidance` object (see guidance/base.py),
so every sampler gets every method and the loop knows none of them by name.

Names: `index` is a position in the (possibly respaced) schedule, `timestep` the original timestep
the networks see; `sigma` is always sqrt(1 - abar) (NoiseSchedule.sigma), DDIM's added noise is `noise_std`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .guidance import ClassifierFreeGuidance, ClassifierGuidance, Guidance, GuidanceStep, Scale, Unguided
from .guidance.classifier import check_targets
from .guidance.base import class_count
from .guidance.scales import scale_schedule
from .schedule import NoiseSchedule
from .solvers import DPMSolver2M

__all__ = ["sample", "check_sampling", "ddpm_step", "ddim_step", "SAMPLERS", "resolve_guidance"]


def ddpm_step(schedule, index, x, eps, noise, *, clip_denoised=False, mean_shift=None, renoise_eps=None, eta=None):
    """Ancestral step: x_{i-1} ~ N(mu(x_i, x0_hat), Sigma_i), Sigma_i the posterior variance."""
    if renoise_eps is not None:
        raise ValueError("re-noising with a separate eps (CG++) is defined for DDIM only; use sampler=ddim")
    index_t = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
    x0 = schedule.predict_x0(x, index_t, eps)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    mean, variance, log_variance = schedule.posterior(x0, x, index_t)
    if mean_shift is not None:
        mean = mean + variance * mean_shift
    if index == 0:
        return mean, x0
    return mean + (0.5 * log_variance).exp() * noise, x0


def ddim_step(schedule, index, x, eps, noise, *, clip_denoised=False, mean_shift=None, renoise_eps=None, eta=0.0):
    """Song et al. 2021; eta=0 is the deterministic ODE step, eta=1 matches DDPM's variance.

    x0_hat comes from `eps`; the direction back to x_{i-1} uses `renoise_eps` when given (CG++), else eps
    (with clip_denoised, each is replaced by the eps of its own clipped x0)."""
    if mean_shift is not None:
        raise ValueError("form='mean' is defined for the ancestral sampler only; use form='eps' with DDIM")
    index_t = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
    x0 = schedule.predict_x0(x, index_t, eps)
    if clip_denoised:  # the direction back to x_{i-1} is made consistent with the clipped x0
        x0 = x0.clamp(-1, 1)
        eps = schedule.predict_eps(x, index_t, x0)
        if renoise_eps is not None:
            renoise_eps = schedule.predict_eps(x, index_t, schedule.predict_x0(x, index_t, renoise_eps).clamp(-1, 1))
    direction = eps if renoise_eps is None else renoise_eps
    abar = schedule.at("alphas_cumprod", index_t, x)
    abar_prev = schedule.at("alphas_cumprod_prev", index_t, x)
    noise_std = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - noise_std**2).clamp(min=0).sqrt() * direction
    if index == 0 or eta == 0:
        return x_prev, x0
    return x_prev + noise_std * noise, x0


SAMPLERS = {"ddpm": ddpm_step, "ddim": ddim_step, "dpm++2m": DPMSolver2M("logsnr"),
            "dpm++2m-t": DPMSolver2M("time")}
LEGACY_OPTIONS = ("form", "null_class")


def resolve_guidance(guidance, model, classifier=None, *, form: str = "eps", null_class: int | None = None) -> Guidance:
    """The Guidance object for sample()'s arguments: an object passes through; the older call forms
    (classifier=..., guidance="classifier"|"cfg", form=, null_class=) build the matching object."""
    if isinstance(guidance, Guidance):
        if classifier is not None:
            raise ValueError("pass the classifier inside the guidance object, not also as classifier=")
        return guidance
    if guidance == "cfg":
        return ClassifierFreeGuidance(null_class, class_count(model))
    if guidance not in (None, "classifier"):
        raise ValueError(f"unknown guidance {guidance!r}; pass a Guidance object, 'classifier' or 'cfg'")
    if classifier is not None:
        return ClassifierGuidance(classifier, form=form)
    if form not in ("eps", "mean"):
        raise ValueError(f"unknown guidance form {form!r}; choose one of ['eps', 'mean']")
    return Unguided()


@torch.no_grad()
def sample(
    model,
    schedule: NoiseSchedule,
    shape,
    *,
    guidance: Guidance | str | None = None,
    classifier=None,
    y: torch.Tensor | None = None,
    scale: Scale = 0.0,
    steps: int | None = None,
    sampler: str = "ddpm",
    eta: float = 0.0,
    clip_denoised: bool = False,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    noise: torch.Tensor | None = None,
    **legacy,
) -> torch.Tensor:
    """Draw samples from an eps-model, optionally guided.

    model(x_t, t) -> eps, with `t` the ORIGINAL timestep in [0, T) also on respaced steps.
    `guidance` is a Guidance object (see guidance/); `classifier=clf` alone means classifier
    guidance, eps form (form="mean" for guided-diffusion's mean shift), and guidance="cfg" with
    null_class=... classifier-free guidance of a class-conditional model(x_t, t, y).
    `y` holds the targets [B]; `scale` is a float, a tensor [B] or a callable of the original timestep
    (see `scale_schedule`). `callback(info)` is called after every step with index, timestep (tensor [B]),
    timestep_value (int), x, x0, eps, scale, grad, log_prob and nfe. `noise` fixes x_T (else drawn from `generator`).
    """
    unknown = set(legacy) - set(LEGACY_OPTIONS)
    if unknown:
        raise TypeError(f"sample() got unexpected keyword arguments {sorted(unknown)}")
    guidance = resolve_guidance(guidance, model, classifier, **legacy)
    run = check_sampling(model, schedule, shape, guidance=guidance, sampler=sampler, steps=steps, eta=eta)

    device = torch.device(device) if device is not None else _device_of(model)
    x = _initial_noise(shape, noise, generator, device)
    batch = x.shape[0]
    w_at = scale_schedule(scale, batch, device)
    if guidance.needs_labels:
        y = _check_labels(y, batch, device, guidance.num_classes)

    step_fn = _step_function(sampler, run)
    timesteps = run.host("timesteps")
    # Nothing in this loop reads the device back (on CUDA a read is a sync that idles the GPU until the
    # host has queued the next work): the scales and timesteps a method decides on come from the host.
    for index in _progress(range(run.num_steps - 1, -1, -1), progress):
        timestep = timesteps[index]
        w, w_host = w_at.at(timestep)
        state = GuidanceStep(model=model, schedule=run, x=x, index=index, scale=w, scale_host=w_host, y=y,
                             timestep=torch.full((batch,), timestep, dtype=torch.long, device=device),
                             timestep_value=timestep)
        out = guidance(state)
        x_next, x0 = step_fn(run, index, x, out.eps, _randn(x.shape, generator, device), clip_denoised=clip_denoised,
                             mean_shift=out.mean_shift, renoise_eps=out.renoise_eps, eta=eta)
        if callback is not None:
            callback({"index": index, "timestep": state.timestep, "timestep_value": timestep, "x": x, "x0": x0,
                      "eps": out.eps, "scale": w, "grad": out.grad, "log_prob": out.log_prob, "nfe": out.nfe})
        x = x_next
    return x


def check_sampler(sampler: str, eta: float) -> None:
    """The part of `check_sampling` that needs no model or schedule (a sweep's settings run it when they are
    read, before any checkpoint loads): a known sampler, eta >= 0, and eta 0 for an ODE solver."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    if not 0.0 <= eta:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta != 0 and getattr(SAMPLERS[sampler], "deterministic", False):
        raise ValueError(f"sampler={sampler!r} solves the deterministic ODE; eta must be 0, got {eta}")


def check_sampling(model, schedule: NoiseSchedule, shape, *, guidance: Guidance, sampler: str,
                   steps: int | None = None, eta: float = 0.0) -> NoiseSchedule:
    """Raise ValueError for what sample() cannot run (sampler, steps, eta, a method the sampler cannot take),
    before any network runs; returns the schedule sample() steps on. A sweep calls it for every method
    before it samples any, so a bad pairing in its last method fails before the first one's work."""
    check_sampler(sampler, eta)
    if steps is not None and not (isinstance(steps, int) and 1 <= steps <= schedule.num_steps):
        raise ValueError(f"steps must be an int in [1, T={schedule.num_steps}], got {steps!r}")
    respace = getattr(SAMPLERS[sampler], "respace", NoiseSchedule.respace)  # the time grid a solver is made for
    run = schedule if steps is None or steps == schedule.num_steps else respace(schedule, steps)
    guidance.check(model=model, schedule=run, shape=tuple(shape), sampler=sampler)
    return run


def _step_function(sampler: str, run: NoiseSchedule):
    """The step of this sample() call. A multistep solver registered in SAMPLERS as an object with
    `for_run(schedule) -> step` gets fresh state (its previous x0 predictions) for every call."""
    step = SAMPLERS[sampler]
    return step.for_run(run) if hasattr(step, "for_run") else step


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


def _check_labels(y, batch, device, num_classes):
    if y is None:
        raise ValueError("y (target classes, LongTensor [B]) is required when guiding")
    y = torch.as_tensor(y, device=device)
    if y.dim() == 0:
        y = y.expand(batch)
    if y.shape != (batch,) or y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"y must be an integer tensor of shape [{batch}], got {tuple(y.shape)} {y.dtype}")
    if num_classes is not None:  # else checked against the classifier's logits at the first step
        check_targets(y, num_classes)
    elif (y < 0).any():
        raise ValueError(f"y must lie in [0, num_classes), got values {y.min().item()}..{y.max().item()}")
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
