"""Shared datamodule behaviour: argument checks, seeded train/val split, loaders, real-image sets."""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from .tensor_cache import make_loader


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk and could not be downloaded."""


def to_model_range(channels: int) -> list:
    """Transforms that turn a PIL image (or uint8 tensor) into float32 [C, H, W] in [-1, 1]."""
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.5] * channels, [0.5] * channels),
    ]


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class ImageDataModule(pl.LightningDataModule):
    """Base class for labelled image datamodules yielding `(x, y)` batches.

    `x` is float32 `[B, C, H, W]` in [-1, 1] and `y` is int64 `[B]`.

    Subclasses implement `load_full_dataset()` (the base splits it into train/val with
    `val_fraction`, seeded by `seed`) or override `load_split_datasets()` when the source has an
    official split. `train_set` / `val_set` exist after `setup()`.

    `image_shape`, `num_classes` and `class_names` are available right after construction unless a
    subclass documents otherwise.
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        data_dir: str = "data",
        image_size: int | None = None,
        pin_memory: bool = False,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        _check_int("batch_size", batch_size, 1)
        _check_int("num_workers", num_workers, 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if image_size is not None:
            _check_int("image_size", image_size, 1)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")

        # Collects the constructor arguments of the whole subclass chain.
        self.save_hyperparameters()
        # Checkpoints must hold only plain Python values (loadable with weights_only=True).
        for key, value in list(self.hparams.items()):
            if isinstance(value, os.PathLike):
                self.hparams[key] = os.fspath(value)

        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = float(val_fraction)
        self.seed = seed
        self.data_dir = os.fspath(data_dir)
        self.image_size = image_size
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    # --- what subclasses describe -------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_full_dataset(self) -> Dataset:
        """The whole labelled dataset, to be split into train/val."""
        raise NotImplementedError

    def load_split_datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val). Default: a seeded random split of `load_full_dataset()`."""
        return self.random_split(self.load_full_dataset())

    def unaugmented_train_set(self) -> Dataset:
        """The train split without random augmentation; override when train_set augments."""
        return self.train_set

    # --- shared machinery ---------------------------------------------------------------------

    def random_split(self, dataset: Dataset) -> tuple[Subset, Subset]:
        """Split into (train, val) Subsets; the same `seed` always gives the same split.

        The val Subset keeps the permuted order, so its first n items are a random sample of the
        dataset rather than, say, its first classes.
        """
        n = len(dataset)
        if n < 2:
            raise ValueError(f"need at least 2 examples to split into train and val, got {n}")
        n_val = min(max(1, round(n * self.val_fraction)), n - 1)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        return Subset(dataset, order[n_val:]), Subset(dataset, order[:n_val])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = self.load_split_datasets()

    def train_dataloader(self) -> DataLoader:
        self._ensure_setup()
        return self._loader(self.train_set, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        self._ensure_setup()
        return self._loader(self.val_set, shuffle=False, drop_last=False)

    def split_size(self, split: str) -> int:
        """How many examples `split` ("train" or "val") holds; sets the data up to count them."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self._ensure_setup()
        return len(self.unaugmented_train_set() if split == "train" else self.val_set)

    def real_images(self, n: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` examples of `split` ("train" or "val") as `(x, y)` tensors, without augmentation."""
        size = self.split_size(split)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= size:
            raise ValueError(f"n must be an integer in [1, {size}] (the size of the {split} split), got {n!r}")
        dataset = self.unaugmented_train_set() if split == "train" else self.val_set
        loader = make_loader(Subset(dataset, range(n)), self.batch_size, num_workers=self.num_workers)
        xs, ys = zip(*loader)
        return torch.cat(xs), torch.cat(ys)

    def _ensure_setup(self) -> None:
        # Lets the datamodule be used without a Trainer. Under DDP the Trainer has already run
        # prepare_data (rank 0) and setup (every rank), so this is a no-op there.
        if self.train_set is None:
            self.prepare_data()
            self.setup("fit")

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool) -> DataLoader:
        return make_loader(
            dataset,
            self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
