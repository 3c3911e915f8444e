"""Any class-per-folder image tree (ImageNet layout): root/<class_name>/<image>.png."""

from __future__ import annotations

import functools
import os

from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from .base import DatasetNotFoundError, ImageDataModule, to_model_range

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
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 64, channels: int = 3, **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)
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

    def load_full_dataset(self) -> Dataset:
        _ = self.class_names  # raises the clear errors for a missing root or no class folders
        transform = v2.Compose(
            to_model_range(self.channels)[:2]
            + [v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]
            + to_model_range(self.channels)[2:]
        )
        try:
            return datasets.ImageFolder(
                self.root, transform=transform, loader=functools.partial(_load_image, mode=_MODES[self.channels])
            )
        except FileNotFoundError as error:  # ImageFolder's "Found no valid file for the classes ..."
            raise ValueError(f"no readable image files in {self.root} ({error}); expected {_LAYOUT}") from error
