"""scikit-learn's 8x8 handwritten digits: tiny, bundled with sklearn, works offline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from .base import ImageDataModule
from .tensor_cache import TensorImageDataset

# load_digits pixel values are integers in [0, 16].
_MAX_PIXEL = 16.0


class DigitsDataModule(ImageDataModule):
    """1797 grayscale digits, 1x8x8 (or 1 x image_size x image_size, bilinear), 10 classes.

    Takes the `ImageDataModule` arguments; `data_dir` is unused. The data is held in memory and
    split into train/val by `val_fraction` and `seed`. `image_shape`, `num_classes` and
    `class_names` are available right after construction.
    """

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.image_size or 8
        return (1, size, size)

    @property
    def class_names(self) -> list[str]:
        return [str(digit) for digit in range(10)]

    def load_full_dataset(self) -> TensorImageDataset:
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1)
        images = images / (_MAX_PIXEL / 2) - 1.0
        if self.image_size is not None and self.image_size != 8:
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            images = images.clamp(-1.0, 1.0)
        labels = torch.as_tensor(digits.target, dtype=torch.int64)
        return TensorImageDataset(images, labels)
