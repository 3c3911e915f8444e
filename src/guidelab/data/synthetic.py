"""Random images and labels, no files: for throughput benchmarks and smoke tests of a config."""

from __future__ import annotations

import torch

from .base import ImageDataModule, _check_int
from .tensor_cache import TensorImageDataset


class SyntheticDataModule(ImageDataModule):
    """`num_samples` uniform images in [-1, 1] of shape `channels x image_size x image_size` with random
    labels in [0, num_classes), drawn once from `seed` (train/val split as for any `ImageDataModule`)."""

    def __init__(self, image_size: int = 32, channels: int = 3, num_classes: int = 10, num_samples: int = 4096,
                 **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)
        _check_int("channels", channels, 1)
        _check_int("num_classes", num_classes, 1)
        _check_int("num_samples", num_samples, 2)
        self.channels, self.num_samples, self._num_classes = channels, num_samples, num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in range(self._num_classes)]

    def load_full_dataset(self) -> TensorImageDataset:
        generator = torch.Generator().manual_seed(self.seed)
        images = torch.rand(self.num_samples, *self.image_shape, generator=generator) * 2 - 1
        labels = torch.randint(0, self._num_classes, (self.num_samples,), generator=generator)
        return TensorImageDataset(images, labels)
