"""Any class-per-folder image tree (ImageNet layout): root/<class_name>/<image>.png."""

from __future__ import annotations

import functools
import os

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .base import DatasetNotFoundError, ImageDataModule, to_model_range
from .tensor_cache import TensorImageDataset

_LAYOUT = "root/<class_name>/<image>.png (one sub-folder per class, images inside)"
_MODES = {1: "L", 3: "RGB"}


def _load_image(path: str, mode: str) -> Image.Image:
    with open(path, "rb") as file:
        return Image.open(file).convert(mode)


class ImageFolderDataModule(ImageDataModule):
    """Images under `root/<class_name>/`, resized (shorter side) and center-cropped to
    `image_size`, converted to `channels` (1 = grayscale, 3 = RGB).

    Takes the `ImageDataModule` arguments too (`data_dir` is unused; the split is random with
    `val_fraction` and `seed`). `image_shape` is available right after construction;
    `class_names` / `num_classes` (sorted folder names) on first access, which scans `root`.
    Raises `DatasetNotFoundError` if `root` is missing, `ValueError` if it holds no class folders
    or no readable images.

    `in_memory=True` (default) decodes every image once, at setup, into a uint8 tensor cache
    (N x C x image_size^2 bytes: 10,000 RGB images at 64x64 are 123 MB); `False` decodes with PIL per
    item per epoch, for trees too large for memory.
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 64, channels: int = 3, in_memory: bool = True,
                 **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.in_memory = in_memory
        if channels not in _MODES:
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.root = os.path.abspath(os.fspath(root))
        self.channels = channels
        self._class_names: list[str] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._check_root()
            try:
                self._class_names, _ = datasets.folder.find_classes(self.root)
            except FileNotFoundError as error:
                raise ValueError(f"no class folders in {self.root}; expected {_LAYOUT}") from error
        return list(self._class_names)

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise DatasetNotFoundError(f"image folder root {self.root} does not exist (or is not a directory); expected {_LAYOUT}")

    def _folder(self, transform) -> datasets.ImageFolder:
        _ = self.class_names  # raises the clear errors for a missing root or no class folders
        try:
            return datasets.ImageFolder(
                self.root, transform=transform, loader=functools.partial(_load_image, mode=_MODES[self.channels])
            )
        except FileNotFoundError as error:  # ImageFolder's "Found no valid file for the classes ..."
            raise ValueError(f"no readable image files in {self.root} ({error}); expected {_LAYOUT}") from error

    def load_full_dataset(self) -> Dataset:
        size = [v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]
        if not self.in_memory:
            channels = to_model_range(self.channels)
            return self._folder(v2.Compose(channels[:2] + size + channels[2:]))
        folder = self._folder(v2.Compose([v2.ToImage(), *size]))  # uint8 [C, S, S]
        loader = DataLoader(folder, batch_size=256, num_workers=self.num_workers)
        images, labels = [], []
        for x, y in tqdm(loader, desc=f"decoding {len(folder)} images into memory", unit="batch", leave=False):
            images.append(x.as_subclass(torch.Tensor))
            labels.append(y)
        return TensorImageDataset(torch.cat(images), torch.cat(labels))
