"""Higher-order ODE solvers for the probability-flow ODE, as step functions of the sampling loop.

DPM-Solver++(2M): Lu, Zhou, Bao, Chen, Li, Zhu 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", arXiv:2211.01095, Algorithm 2 (multistep second order, data prediction).
Its exponential integrator works in lambda = log(alpha / sigma) (half the log-SNR) and on the data
prediction x0, which stays bounded under large guidance scales where eps-based solvers go unstable.

A multistep solver needs the previous step's x0 prediction: `dpm_solver_2m_step` takes it as
`previous_x0`, and `DPMSolver2M` (what `SAMPLERS["dpm++2m"]` holds) gives each `sample()` call a step
closure that carries it (`for_run`). The solver also names the time grid it is meant for (`respace`,
schedule and step count -> respaced schedule) and that it is deterministic. DPM-Solver++ takes
steps uniform in lambda (the logSNR spacing of Lu et al. 2022a, arXiv:2206.00927, whose experiments use it for
low-resolution images), where r_i = h_{i-1} / h_i stays near 1 and the second-order correction is accurate;
on timesteps uniform in t, h grows tenfold over the last steps and the extrapolation overshoots.
"""

from __future__ import annotations

import math

import torch

from .schedule import NoiseSchedule

__all__ = ["dpm_solver_2m_step", "DPMSolver2M", "half_log_snr", "logsnr_respace"]


def half_log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha / sigma) = 0.5 * log(abar / (1 - abar)), the solver's time variable."""
    return 0.5 * (alphas_cumprod.log() - torch.log1p(-alphas_cumprod))


def logsnr_respace(schedule: NoiseSchedule, steps: int) -> NoiseSchedule:
    """`schedule` respaced to about `steps` indices evenly spread in lambda between its last and first index
    (always keeping both ends; indices that round to the same timestep are kept once)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= schedule.num_steps:
        raise ValueError(f"steps must be an int in [1, {schedule.num_steps}], got {steps!r}")
    lam = half_log_snr(schedule.alphas_cumprod)
    grid = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64)
    nearest = (lam[None, :] - grid[:, None]).abs().argmin(dim=1)
    return schedule.respace(sorted(set(nearest.tolist()) | {schedule.num_steps - 1}))


def dpm_solver_2m_step(schedule: NoiseSchedule, index: int, x, eps, noise, *, clip_denoised=False, mean_shift=None,
                       renoise_eps=None, eta=0.0, previous_x0: torch.Tensor | None = None):
    """One DPM-Solver++(2M) step from schedule index `index` to index - 1 (arXiv:2211.01095, Algorithm 2).

    `eps` is the (already guided) prediction at `index`; `previous_x0` the x0 prediction made at
    index + 1 (None on the first step, which is then first order). The step landing on index 0 is first order
    too ("lower order final", as in the authors' code): on a grid uniform in t, h is there the largest of the
    whole grid and extrapolating from a far shorter previous step amplifies the error. Deterministic: `noise`
    is unused.
    Returns (x at index - 1, the x0 prediction at index), like `ddim_step`.
    """
    if mean_shift is not None:
        raise ValueError("form='mean' is defined for the ancestral sampler only; use form='eps' with DPM-Solver++")
    if renoise_eps is not None:
        raise ValueError("re-noising with a separate eps (CG++) is defined for DDIM only; use sampler=ddim")
    if eta != 0:
        raise ValueError(f"DPM-Solver++(2M) solves the deterministic ODE; eta must be 0, got {eta}")
    index_t = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
    # data prediction x0 = (x_t - sigma_t eps) / alpha_t (Sec. 3.1); clipping is the thresholding of Sec. 3.3
    x0 = schedule.predict_x0(x, index_t, eps)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    abar_next = schedule.host("alphas_cumprod_prev")[index]  # host numbers: the step reads nothing back from the device
    if abar_next >= 1.0:
        # sigma_next = 0 (h -> infinity): the exact ODE step lands on the data prediction itself
        return x0, x0
    abar = schedule.host("alphas_cumprod")
    lam_now, lam_next = half_log_snr(torch.tensor([abar[index], abar_next], dtype=torch.float64)).tolist()
    # step size in lambda: h_i = lambda_{t_i} - lambda_{t_{i-1}} (Algorithm 2, line 4)
    h = lam_next - lam_now
    x0_blend = x0
    if previous_x0 is not None and index > 1:
        (lam_prev,) = half_log_snr(torch.tensor([abar[index + 1]], dtype=torch.float64)).tolist()
        # r_i = h_{i-1} / h_i, and D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1} (Algorithm 2, lines 5-6)
        r = (lam_now - lam_prev) / h
        x0_blend = (1 + 0.5 / r) * x0 - (0.5 / r) * previous_x0
    sigma_ratio = ((1 - abar_next) / (1 - abar[index])) ** 0.5
    alpha_next = abar_next**0.5
    # x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i (Algorithm 2, line 7)
    x_next = sigma_ratio * x - alpha_next * math.expm1(-h) * x0_blend
    return x_next, x0


class DPMSolver2M:
    """DPM-Solver++(2M) as the sampling loop's multistep solver: a fresh step closure per sample() call.

    grid "logsnr" (sampler "dpm++2m"): steps uniform in lambda, the most accurate on the analytic oracle;
    grid "time" (sampler "dpm++2m-t"): steps uniform in t like DDIM's, more steps at high noise where
    classifier guidance decides the class (on digits it follows DDIM-50's accuracy curve more closely;
    experiments/dpm_solver)."""

    deterministic = True

    def __init__(self, grid: str = "logsnr"):
        if grid not in ("logsnr", "time"):
            raise ValueError(f"grid must be 'logsnr' or 'time', got {grid!r}")
        self.grid = grid

    def respace(self, schedule: NoiseSchedule, steps: int) -> NoiseSchedule:
        return logsnr_respace(schedule, steps) if self.grid == "logsnr" else schedule.respace(steps)

    def for_run(self, run: NoiseSchedule):
        previous = {}  # the x0 prediction of the step before, once there is one

        def step(schedule, index, x, eps, noise, **options):
            x_next, x0 = dpm_solver_2m_step(schedule, index, x, eps, noise, previous_x0=previous.get("x0"), **options)
            previous["x0"] = x0
            return x_next, x0

        return step
