"""Noise schedules of the forward process q(x_t | x_0) and its posterior q(x_{t-1} | x_t, x_0)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

__all__ = ["NoiseSchedule", "spaced_timesteps"]


def spaced_timesteps(T: int, steps: int) -> list[int]:
    """`steps` timesteps evenly spread over [0, T), always keeping 0 and T - 1."""
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, T={T}], got {steps}")
    if steps == 1:
        return [T - 1]
    return sorted({round(i * (T - 1) / (steps - 1)) for i in range(steps)})


class NoiseSchedule:
    """A discrete variance schedule, possibly a respaced subset of a longer base schedule.

    Index `i` runs over the schedule's own steps (0 .. num_steps - 1); `timesteps[i]` is the
    original timestep in [0, T) that networks are conditioned on.
    """

    def __init__(
        self,
        betas: torch.Tensor | Sequence[float],
        *,
        kind: str = "custom",
        T: int | None = None,
        timesteps: torch.Tensor | Sequence[int] | None = None,
        params: dict | None = None,
    ):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() == 0:
            raise ValueError("a schedule needs at least one beta")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas > 1).any():
            raise ValueError("betas must be finite and in (0, 1]")
        self.betas = betas
        self.kind = kind
        self.params = dict(params or {})
        self.timesteps = (
            torch.arange(len(betas)) if timesteps is None else torch.as_tensor(timesteps, dtype=torch.long)
        )
        if self.timesteps.shape != betas.shape:
            raise ValueError(f"{len(self.timesteps)} timesteps for {len(betas)} betas")
        self.T = int(T) if T is not None else len(betas)

        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        one_minus = 1.0 - self.alphas_cumprod
        # Posterior q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, variance).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / one_minus
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / one_minus
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / one_minus
        # The variance is 0 at the first step; its log is clipped to the next value (as in DDPM).
        first = self.posterior_variance[1:2] if len(betas) > 1 else self.betas[:1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([first, self.posterior_variance[1:]]))
        # float64 tables above, copied once per (name, device, dtype) that asks for them: training calls
        # q_sample every step, and a host-to-device copy there costs a transfer (and a sync) each time
        self._tables: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}
        self._host_lists: dict[str, list] = {}

    def table(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The float64 table `name` (e.g. "alphas_cumprod") on like's device in like's dtype, cached.

        Casting the whole table then indexing gives the same values as indexing then casting."""
        key = (name, like.device, like.dtype)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        return table

    def host(self, name: str) -> list:
        """The table `name` (or "timesteps") as a list of Python numbers, cached: what a sampling loop reads
        per step, so that reading one value is no tensor operation."""
        values = self._host_lists.get(name)
        if values is None:
            values = self._host_lists[name] = getattr(self, name).tolist()
        return values

    def at(self, name: str, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table `name` at schedule indices `index` [B], shaped [B, 1, ..., 1] to broadcast against `like`."""
        return self.table(name, like)[index.to(like.device)].reshape(-1, *([1] * (like.dim() - 1)))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def linear(cls, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """Ho et al. 2020: betas linear from beta_start to beta_end."""
        _check_T(T)
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        schedule = cls(betas, kind="linear", params={"beta_start": beta_start, "beta_end": beta_end})
        if schedule.alphas_cumprod[-1] > 0.05:
            warnings.warn(
                f"linear schedule with T={T} ends at alpha_bar={schedule.alphas_cumprod[-1]:.3f}: x_T is far from "
                "pure noise, so sampling from N(0, I) is off; raise T or beta_end",
                stacklevel=2,
            )
        return schedule

    @classmethod
    def cosine(cls, T: int, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Nichol & Dhariwal 2021: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi / 2)."""
        _check_T(T)

        def alpha_bar(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)]
        return cls(betas, kind="cosine", params={"s": s, "max_beta": max_beta})

    @classmethod
    def from_config(cls, kind: str, T: int, **params) -> "NoiseSchedule":
        builders = {"linear": cls.linear, "cosine": cls.cosine}
        if kind not in builders:
            raise ValueError(f"unknown schedule kind {kind!r}; choose one of {sorted(builders)}")
        return builders[kind](T, **params)

    def to_config(self) -> dict:
        """Plain-dict description stored in checkpoints and compared for compatibility."""
        return {"kind": self.kind, "T": self.T, **self.params}

    # ----------------------------------------------------------------- respacing
    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def is_respaced(self) -> bool:
        return self.num_steps != self.T

    def respace(self, steps: int | Sequence[int]) -> "NoiseSchedule":
        """Keep a subset of steps (a count spread evenly, or explicit indices of this schedule).

        The kept alphas_cumprod are unchanged; betas are recomputed from them so that the
        shorter chain has the same marginals at the kept timesteps.
        """
        if isinstance(steps, int) and not isinstance(steps, bool):
            keep = spaced_timesteps(self.num_steps, steps)
        else:
            keep = sorted(set(int(k) for k in steps))
            if not keep or keep[0] < 0 or keep[-1] >= self.num_steps:
                raise ValueError(f"respaced indices must lie in [0, {self.num_steps})")
        kept = self.alphas_cumprod[keep]
        previous = torch.cat([torch.ones(1, dtype=torch.float64), kept[:-1]])
        return NoiseSchedule(
            1.0 - kept / previous, kind=self.kind, T=self.T, timesteps=self.timesteps[keep], params=self.params
        )

    # ----------------------------------------------------------------- forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I); `t` indexes this schedule."""
        if noise is None:
            noise = torch.randn_like(x0)
        abar = self.at("alphas_cumprod", t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self.at("posterior_mean_coef1", t, x_t) * x0 + self.at("posterior_mean_coef2", t, x_t) * x_t
        return mean, self.at("posterior_variance", t, x_t), self.at("posterior_log_variance_clipped", t, x_t)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        abar = self.at("alphas_cumprod", t, x_t)
        return (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        abar = self.at("alphas_cumprod", t, x_t)
        return (x_t - abar.sqrt() * x0) / (1.0 - abar).sqrt()

    def sigma(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """sqrt(1 - abar_t), the factor between eps and the score, shaped to broadcast."""
        return (1.0 - self.at("alphas_cumprod", t, like)).sqrt()

    def __repr__(self) -> str:
        return f"NoiseSchedule(kind={self.kind!r}, T={self.T}, num_steps={self.num_steps})"


def _check_T(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
