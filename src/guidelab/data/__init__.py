"""LightningDataModules yielding `(x, y)`: x float32 [B, C, H, W] in [-1, 1], y int64 [B]."""

from .base import DatasetNotFoundError, ImageDataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .synthetic import SyntheticDataModule
from .torchvision_sets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SyntheticDataModule",
]
