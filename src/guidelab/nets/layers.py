"""Building blocks shared by the UNet and the classifiers (ADM-style, timestep-conditioned)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "timestep_embedding",
    "group_norm",
    "TimestepMLP",
    "TimestepBlock",
    "TimestepSequential",
    "ResBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
    "zero_",
    "as_int_tuple",
    "check_image_batch",
    "check_timesteps",
]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] (cos half, then sin half) of timesteps t [B], always float32."""
    if t.dim() != 1:
        raise ValueError(f"timesteps must be 1-D [B], got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm whose group count divides `channels` (gcd), so narrow test widths like 24 work."""
    return nn.GroupNorm(math.gcd(channels, groups), channels)


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def as_int_tuple(values, name: str) -> tuple[int, ...]:
    """Normalise an int or a sequence (list, tuple, OmegaConf ListConfig) to a tuple of ints."""
    if isinstance(values, int):
        return (values,)
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a sequence of ints, got {values!r}") from err


def check_image_batch(x: torch.Tensor, channels: int, multiple: int, who: str) -> None:
    """Raise a ValueError unless x is [B, channels, H, W] with H and W divisible by `multiple`."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects images [B, C, H, W], got {shape}")
    if x.shape[1] != channels:
        raise ValueError(f"{who} was built for {channels} input channels, got x of shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"{who} needs H and W divisible by {multiple} (its downsampling factor), got {h}x{w}")


def check_timesteps(t: torch.Tensor | None, x: torch.Tensor, who: str) -> torch.Tensor:
    """t as a LongTensor [B] on x's device; None means clean images (t = 0); a scalar is broadcast."""
    batch = x.shape[0]
    if t is None:
        return torch.zeros(batch, dtype=torch.long, device=x.device)
    t = torch.as_tensor(t, device=x.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{who} expects timesteps t of shape [{batch}] to match x, got {tuple(t.shape)}")
    return t


class TimestepMLP(nn.Module):
    """Sinusoidal embedding of t followed by Linear -> SiLU -> Linear."""

    def __init__(self, freq_dim: int, out_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.net = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(timestep_embedding(t, self.freq_dim))


class TimestepBlock(nn.Module):
    """Marker for blocks whose forward takes (x, emb)."""


class TimestepSequential(nn.Sequential):
    """Sequential that hands the timestep embedding to the blocks that want it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class ResBlock(TimestepBlock):
    """Residual block; t enters as GroupNorm(h) * (1 + scale) + shift before the second conv."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_ch, groups), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.out_norm = group_norm(out_ch, groups)
        # Zero-initialised last conv: every block starts as the identity, which keeps deep stacks stable.
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, via scaled_dot_product_attention."""

    def __init__(self, ch: int, num_heads: int = 4, groups: int = 32):
        super().__init__()
        if ch % num_heads:
            raise ValueError(f"attention channels ({ch}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = zero_(nn.Linear(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # [B, HW, C] is a free view for channels_last inputs.
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling followed by a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
