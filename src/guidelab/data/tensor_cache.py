"""Datasets decoded once into one tensor, served a whole batch per call.

Decoding a PNG (or a torchvision record) through PIL per item per epoch costs far more than the
training step of a small net: 10,000 MNIST PNGs at 8x8 trained at about 1 step/s on 2 CPU cores
this way. Here the images are decoded once into a uint8 tensor [N, C, H, W] (or kept as the float
tensor they already are), and `__getitems__` turns a list of indices into a batch with a handful of
tensor ops: index, convert to float, resize/pad, flip at random per image, map to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1], as torchvision's ToDtype(float32, scale=True)."""
    return images.to(torch.float32).div_(255.0)


def unit_to_model_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], as Normalize(mean=0.5, std=0.5)."""
    return images.sub_(0.5).div_(0.5)


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2, independently."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


class TensorImageDataset(Dataset):
    """Labelled images held in memory, yielding `(x, y)`: x float32 [C, H, W] in [-1, 1], y int64.

    `images`: uint8 [N, C, H, W] (mapped through `resize` in [0, 1], then to [-1, 1]) or float
    [N, C, H, W] already in [-1, 1] (used as is). `resize`: a batched [B, C, H, W] -> [B, C, H', W']
    transform on [0, 1] floats (torchvision v2 transforms accept batches). `random_flip`: flip each
    image left-right with probability 1/2 (training augmentation).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, resize: Callable | None = None,
                 random_flip: bool = False):
        if images.dim() != 4 or len(images) != len(labels):
            raise ValueError(f"need images [N, C, H, W] and N labels, got {list(images.shape)} and {len(labels)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"images must be uint8 or float, got {images.dtype}")
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.resize = resize
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[index]
        if x.dtype == torch.uint8:
            x = uint8_to_unit(x)
            if self.resize is not None:
                x = self.resize(x)
            x = unit_to_model_range(x)
        else:
            x = x.clone()
        if self.random_flip:
            x = random_hflip(x)
        return x.contiguous(), self.labels[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch([index])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(indices)  # a whole batch: the loader's collate passes it through

    def without_flip(self) -> "TensorImageDataset":
        return TensorImageDataset(self.images, self.labels, self.resize, random_flip=False)


def _root(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _pass_batch(batch):
    return batch


def make_loader(dataset: Dataset, batch_size: int, **kwargs) -> DataLoader:
    """A DataLoader; over a TensorImageDataset (or Subsets of one) each batch is built by one
    `__getitems__` call and passed through collate untouched."""
    if isinstance(_root(dataset), TensorImageDataset):
        kwargs.setdefault("collate_fn", _pass_batch)
    return DataLoader(dataset, batch_size=batch_size, **kwargs)
