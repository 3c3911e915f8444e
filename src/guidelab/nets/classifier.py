"""Classifiers for guidance (noise-aware, conditioned on t) and for evaluation (clean, t ignored).

Both are called as `net(x, t=None) -> logits [B, num_classes]` and expose `features(x, t) -> [B, F]`,
the input of the final Linear `head`, with `num_features = F`. `t=None` means clean images (t = 0).
Inputs must be [B, in_channels, image_size, image_size].
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import TimestepMLP, check_image_batch, check_timesteps, group_norm
from .unet import Encoder

__all__ = ["EncoderClassifier", "SmallCNNClassifier"]


def _check_square(x: torch.Tensor, image_size: int, who: str) -> None:
    if x.shape[-2:] != (image_size, image_size):
        raise ValueError(f"{who} was built for {image_size}x{image_size} images, got x of shape {tuple(x.shape)}")


class EncoderClassifier(nn.Module):
    """ADM's noise-aware classifier: the UNet encoder and middle block, GroupNorm, SiLU, mean pool, Linear."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        num_classes: int,
        base_channels: int = 128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions=None,
        attention_downsample=None,
        num_heads: int = 4,
        dropout: float = 0.0,
        groups: int = 32,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.image_size = image_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder = Encoder(
            image_size=image_size,
            in_channels=in_channels,
            base_channels=base_channels,
            channel_mult=channel_mult,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            attention_downsample=attention_downsample,
            num_heads=num_heads,
            dropout=dropout,
            groups=groups,
        )
        self.num_features = self.encoder.out_channels
        self.pool = nn.Sequential(
            group_norm(self.num_features, groups), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        check_image_batch(x, self.in_channels, 1, "EncoderClassifier")
        _check_square(x, self.image_size, "EncoderClassifier")
        t = check_timesteps(t, x, "EncoderClassifier")
        h, _, _ = self.encoder(x, t)
        return self.pool(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, t))


class _ConvStage(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, plus an optional per-channel shift from the time embedding."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, emb_dim: int | None):
        super().__init__()
        self.layers = nn.Sequential(group_norm(in_ch, 8), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, stride, 1))
        self.emb_proj = nn.Linear(emb_dim, out_ch) if emb_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.layers(x)
        if self.emb_proj is not None:
            h = h + self.emb_proj(emb)[:, :, None, None]
        return h


class SmallCNNClassifier(nn.Module):
    """Light CNN: stem, three conv stages (two strided), mean pool, MLP head.

    With `time_conditioned=True` a timestep embedding shifts every stage and is concatenated to the
    pooled features before the MLP; with `time_conditioned=False` there are no time parameters and
    t is ignored (the clean evaluation classifier).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        time_conditioned: bool = True,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if width < 1 or image_size < 1:
            raise ValueError(f"width and image_size must be positive, got {width} and {image_size}")
        self.image_size = image_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.time_conditioned = time_conditioned
        emb_dim = 4 * width if time_conditioned else None
        self.time_embed = TimestepMLP(width, emb_dim) if time_conditioned else None
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.stages = nn.ModuleList(
            [
                _ConvStage(width, width, 1, emb_dim),
                _ConvStage(width, 2 * width, 2, emb_dim),
                _ConvStage(2 * width, 4 * width, 2, emb_dim),
            ]
        )
        self.pool = nn.Sequential(group_norm(4 * width, 8), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 4 * width
        self.mlp = nn.Sequential(nn.Linear(4 * width + (emb_dim or 0), self.num_features), nn.SiLU())
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        check_image_batch(x, self.in_channels, 1, "SmallCNNClassifier")
        _check_square(x, self.image_size, "SmallCNNClassifier")
        emb = None
        if self.time_conditioned:
            emb = self.time_embed(check_timesteps(t, x, "SmallCNNClassifier"))
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h, emb)
        h = self.pool(h)
        if emb is not None:
            h = torch.cat([h, emb.to(h.dtype)], dim=1)
        return self.mlp(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, t))
