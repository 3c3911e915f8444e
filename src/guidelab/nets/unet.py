"""ADM-style UNet eps-model (Dhariwal & Nichol 2021) and the encoder half it shares with the classifier."""

from __future__ import annotations

import torch
from torch import nn

from .layers import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepMLP,
    TimestepSequential,
    Upsample,
    as_int_tuple,
    check_image_batch,
    check_timesteps,
    group_norm,
    zero_,
)

__all__ = ["UNet", "Encoder"]


DEFAULT_ATTENTION_DOWNSAMPLE = (2,)  # the CIFAR-10 preset's 16x16 maps at 32x32, and 4x4 at 8x8 digits


def attention_sizes(image_size: int, resolutions: list[int], attention_resolutions, attention_downsample) -> set[int]:
    """The feature-map sizes that get attention, checked against the sizes that occur (`resolutions`)."""
    if attention_resolutions is not None and attention_downsample is not None:
        raise ValueError(
            f"give net.attention_resolutions (feature-map sizes, here {list(attention_resolutions)}) or "
            f"net.attention_downsample (factors of the image size, here {list(attention_downsample)}), not both; "
            "set the other to null"
        )
    if attention_resolutions is not None:
        sizes = set(as_int_tuple(attention_resolutions, "attention_resolutions"))
        unreachable = sorted(sizes - set(resolutions))
        if unreachable:
            fits = [size for size in resolutions if size < image_size] or resolutions[-1:]
            raise ValueError(
                f"net.attention_resolutions={sorted(sizes)}: feature maps of size {unreachable} never occur for "
                f"{image_size}x{image_size} images (they are {resolutions}); override net.attention_resolutions=[{fits[0]}] "
                f"(or [] for none), or use net.attention_downsample=[2], which follows the image size"
            )
        return sizes
    factors = as_int_tuple(DEFAULT_ATTENTION_DOWNSAMPLE if attention_downsample is None else attention_downsample,
                           "attention_downsample")
    unreachable = sorted(f for f in factors if f < 1 or image_size % f or image_size // f not in resolutions)
    if unreachable:
        valid = [image_size // size for size in resolutions]
        raise ValueError(
            f"net.attention_downsample={list(factors)}: factors {unreachable} give no feature map for "
            f"{image_size}x{image_size} images (the net downsamples by {valid}); override net.attention_downsample "
            f"with factors from {valid} (or [] for none)"
        )
    return {image_size // factor for factor in factors}


class Encoder(nn.Module):
    """Time embedding, input conv, down path and middle block (ResBlock, attention, ResBlock).

    `forward(x, t)` returns (h, emb, skips): the middle-block output, the timestep embedding and the
    activations the UNet decoder concatenates back in. Attention goes where the feature maps are
    `image_size // d` for each d in `attention_downsample` (ADM's "attention_ds", so a config follows the
    data's image size), or at the absolute feature-map sizes `attention_resolutions` (give one of the two).
    """

    def __init__(
        self,
        *,
        image_size: int,
        in_channels: int,
        base_channels: int,
        channel_mult,
        num_res_blocks: int,
        attention_resolutions=None,
        attention_downsample=None,
        num_heads: int,
        dropout: float,
        groups: int,
    ):
        super().__init__()
        channel_mult = as_int_tuple(channel_mult, "channel_mult")
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty sequence of positive ints, got {channel_mult}")
        if num_res_blocks < 1 or base_channels < 1 or in_channels < 1:
            raise ValueError("num_res_blocks, base_channels and in_channels must be positive")
        self.factor = 2 ** (len(channel_mult) - 1)
        if image_size % self.factor:
            raise ValueError(f"image_size {image_size} is not divisible by 2**(len(channel_mult)-1) = {self.factor}")
        self.resolutions = [image_size // 2**i for i in range(len(channel_mult))]
        attention_resolutions = attention_sizes(image_size, self.resolutions, attention_resolutions, attention_downsample)
        self.in_channels = in_channels
        self.channel_mult = channel_mult
        self.attention_resolutions = attention_resolutions
        # 2x base (ADM uses 4x): scale-shift doubles each ResBlock's projection, and 2x keeps the
        # CIFAR-10 preset near the DDPM size (35.5M; the paper states 35.7M) instead of 38.3M.
        self.emb_dim = 2 * base_channels
        self.time_embed = TimestepMLP(base_channels, self.emb_dim)

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, self.emb_dim, dropout, groups)

        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        self.skip_channels = [base_channels]
        ch = base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                block = [res(ch, base_channels * mult)]
                ch = base_channels * mult
                if self.resolutions[level] in attention_resolutions:
                    block.append(AttentionBlock(ch, num_heads, groups))
                self.down.append(TimestepSequential(*block))
                self.skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(TimestepSequential(Downsample(ch)))
                self.skip_channels.append(ch)
        self.middle = TimestepSequential(res(ch, ch), AttentionBlock(ch, num_heads, groups), res(ch, ch))
        self.out_channels = ch

    def forward(self, x: torch.Tensor, t: torch.Tensor, extra_emb: torch.Tensor | None = None):
        emb = self.time_embed(t)
        if extra_emb is not None:  # e.g. a class embedding, added to the timestep embedding
            emb = emb + extra_emb
        h = self.input_conv(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        return self.middle(h, emb), emb, skips


class UNet(nn.Module):
    """Noise-prediction UNet: `forward(x, t, y=None) -> eps` with eps shaped like x.

    With `num_classes` set the UNet is class-conditional (classifier-free guidance): a learned
    embedding of y, with index `num_classes` the null (unconditional) label used when y is None,
    is added to the timestep embedding. Without it, y must be None.

    The defaults are the CIFAR-10 preset (35,521,411 parameters, the DDPM CIFAR-10 size). A digits
    preset for 8x8x1 images: base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
    attention_resolutions=(4,), dropout=0.0, groups=8 (173,409 parameters).
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        in_channels: int = 3,
        out_channels: int | None = None,
        base_channels: int = 128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions=None,
        attention_downsample=None,
        num_heads: int = 4,
        dropout: float = 0.1,
        groups: int = 32,
        num_classes: int | None = None,
    ):
        super().__init__()
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
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
        enc = self.encoder
        if self.num_classes is not None:
            self.label_embed = nn.Embedding(self.num_classes + 1, enc.emb_dim)
        skips = list(enc.skip_channels)
        ch = enc.out_channels
        self.up = nn.ModuleList()
        for level in reversed(range(len(enc.channel_mult))):
            out_ch = base_channels * enc.channel_mult[level]
            for i in range(num_res_blocks + 1):
                block = [ResBlock(ch + skips.pop(), out_ch, enc.emb_dim, dropout, groups)]
                ch = out_ch
                if enc.resolutions[level] in enc.attention_resolutions:
                    block.append(AttentionBlock(ch, num_heads, groups))
                if level and i == num_res_blocks:
                    block.append(Upsample(ch))
                self.up.append(TimestepSequential(*block))
        self.out = nn.Sequential(
            group_norm(ch, groups), nn.SiLU(), zero_(nn.Conv2d(ch, self.out_channels, 3, padding=1))
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_image_batch(x, self.in_channels, self.encoder.factor, "UNet")
        if t is None:
            raise ValueError("UNet needs timesteps t (LongTensor [B]); only classifiers accept t=None")
        t = check_timesteps(t, x, "UNet")
        h, emb, skips = self.encoder(x, t, self._label_embedding(y, x))
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    def _label_embedding(self, y: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        if self.num_classes is None:
            if y is not None:
                raise ValueError("this UNet is unconditional (num_classes=None) and takes no labels y")
            return None
        if y is None:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        y = torch.as_tensor(y, device=x.device)
        if y.shape != (x.shape[0],) or y.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"UNet expects labels y as an integer tensor of shape [{x.shape[0]}], "
                             f"got {tuple(y.shape)} {y.dtype}")
        return self.label_embed(y.long())
