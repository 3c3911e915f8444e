"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision.datasets.

These use the official splits: train for training, test for validation (`val_fraction` is
unused). `image_shape`, `num_classes` and `class_names` are available right after construction.

Files are downloaded in `prepare_data` only when missing (and `download=True`). When they are
missing and cannot be downloaded, `prepare_data`/`setup` raise `DatasetNotFoundError` saying
where the files are expected.
"""

from __future__ import annotations

import contextlib
import os
import socket

import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from .base import DatasetNotFoundError, ImageDataModule
from .tensor_cache import TensorImageDataset

# torchvision's urllib calls have no timeout of their own; a blackholed network would hang forever.
_DOWNLOAD_SOCKET_TIMEOUT_S = 30.0


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


class _TorchvisionDataModule(ImageDataModule):
    dataset_cls: type
    native_shape: tuple[int, int, int]
    names: list[str]

    def __init__(self, download: bool = True, resize_mode: str = "resize", **kwargs) -> None:
        """`download`: try to fetch missing files in `prepare_data`. `resize_mode`: how to reach an
        `image_size` other than the native one: "resize" (bilinear, antialiased) or "pad" (centered
        padding with black, only to grow)."""
        super().__init__(**kwargs)
        if resize_mode not in ("resize", "pad"):
            raise ValueError(f"resize_mode must be 'resize' or 'pad', got {resize_mode!r}")
        native = self.native_shape[1]
        if resize_mode == "pad" and self.image_size is not None and self.image_size < native:
            raise ValueError(f"resize_mode='pad' can only grow images; image_size {self.image_size} < {native}")
        self.download = download
        self.resize_mode = resize_mode

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, native, _ = self.native_shape
        size = self.image_size or native
        return (channels, size, size)

    @property
    def class_names(self) -> list[str]:
        return list(self.names)

    # --- files on disk ------------------------------------------------------------------------

    def expected_dir(self) -> str:
        """Absolute directory where torchvision looks for the files."""
        raise NotImplementedError

    def expected_files(self) -> list[str]:
        raise NotImplementedError

    def files_hint(self) -> str:
        """How to describe the expected files in error messages."""
        return ", ".join(self.expected_files())

    def _files_present(self) -> bool:
        return all(os.path.isfile(os.path.join(self.expected_dir(), name)) for name in self.expected_files())

    def _not_found(self, reason: str) -> DatasetNotFoundError:
        name = self.dataset_cls.__name__
        return DatasetNotFoundError(
            f"{name} dataset not found: {reason}. Expected {self.files_hint()} in {self.expected_dir()}. "
            f"Run once with internet access and download=True, or copy the files there "
            f"(data_dir={os.path.abspath(self.data_dir)!r})."
        )

    def prepare_data(self) -> None:
        if self._files_present():
            return
        if not self.download:
            raise self._not_found("files are missing and download=False")
        try:
            with _socket_timeout(_DOWNLOAD_SOCKET_TIMEOUT_S):
                for train in (True, False):
                    self.dataset_cls(self.data_dir, train=train, download=True)
        # torchvision raises RuntimeError (MNIST), URLError (CIFAR), timeouts, ... when offline.
        except Exception as error:
            raise self._not_found(f"download failed ({type(error).__name__}: {error})") from error

    # --- datasets -----------------------------------------------------------------------------

    def _resize(self) -> v2.Transform | None:
        """Batched [B, C, H, W] resize or pad from the native size to image_size, on [0, 1] floats."""
        _, native, _ = self.native_shape
        size = self.image_size or native
        if size == native:
            return None
        if self.resize_mode == "resize":
            return v2.Resize((size, size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        before = (size - native) // 2
        # fill 0 in [0, 1] becomes -1 (black background) after the mapping to [-1, 1]
        return v2.Pad([before, before, size - native - before, size - native - before], fill=0)

    def _official(self, train: bool, augment: bool = False) -> Dataset:
        """The official split decoded once into a uint8 tensor cache (see tensor_cache)."""
        split = "train" if train else "test"
        if not self._files_present():
            raise self._not_found(f"{split} files are missing")
        try:
            source = self.dataset_cls(self.data_dir, train=train, download=False)
        except RuntimeError as error:  # torchvision's "not found or corrupted"
            raise self._not_found(f"{split} files are missing or corrupted ({error})") from error
        images = torch.as_tensor(source.data)
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # [N, C, H, W]
        return TensorImageDataset(images.contiguous(), torch.as_tensor(source.targets), resize=self._resize(),
                                  random_flip=augment)

    def load_split_datasets(self) -> tuple[Dataset, Dataset]:
        return self._official(train=True), self._official(train=False)


class _MNISTLike(_TorchvisionDataModule):
    native_shape = (1, 28, 28)

    def expected_dir(self) -> str:
        return os.path.abspath(os.path.join(self.data_dir, self.dataset_cls.__name__, "raw"))

    def expected_files(self) -> list[str]:
        return [f"{split}-{kind}" for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]

    def files_hint(self) -> str:
        # torchvision only reads the uncompressed files; it extracts the official .gz archives
        # (md5-checked, no network needed) only when download=True.
        return (
            f"the uncompressed IDX files {', '.join(self.expected_files())} "
            f"(or the official .gz archives with download=True, which extracts them)"
        )


class MNISTDataModule(_MNISTLike):
    """MNIST digits, 1x28x28 (or 1 x image_size x image_size), 10 classes.

    Files: `<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`.
    """

    dataset_cls = datasets.MNIST
    names = [str(digit) for digit in range(10)]


class FashionMNISTDataModule(_MNISTLike):
    """Fashion-MNIST, 1x28x28 (or 1 x image_size x image_size), 10 classes.

    Files: `<data_dir>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`.
    """

    dataset_cls = datasets.FashionMNIST
    names = list(datasets.FashionMNIST.classes)


class CIFAR10DataModule(_TorchvisionDataModule):
    """CIFAR-10, 3x32x32 (or 3 x image_size x image_size), 10 classes.

    `random_flip` flips training images horizontally at random (never validation images, nor
    `real_images(split="train")`). Files: `<data_dir>/cifar-10-batches-py/` (md5-checked by
    torchvision) or `<data_dir>/cifar-10-python.tar.gz` with download=True.
    """

    dataset_cls = datasets.CIFAR10
    native_shape = (3, 32, 32)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def __init__(self, random_flip: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.random_flip = random_flip
        self._train_plain: Dataset | None = None

    def expected_dir(self) -> str:
        return os.path.abspath(os.path.join(self.data_dir, datasets.CIFAR10.base_folder))

    def expected_files(self) -> list[str]:
        return [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]

    def files_hint(self) -> str:
        archive = os.path.abspath(os.path.join(self.data_dir, datasets.CIFAR10.filename))
        return f"the extracted files {', '.join(self.expected_files())} (or {archive} with download=True, which extracts it)"

    def load_split_datasets(self) -> tuple[Dataset, Dataset]:
        return self._official(train=True, augment=self.random_flip), self._official(train=False)

    def unaugmented_train_set(self) -> Dataset:
        if not self.random_flip:
            return self.train_set
        if self._train_plain is None:
            self._train_plain = self.train_set.without_flip()  # shares the cached images
        return self._train_plain
