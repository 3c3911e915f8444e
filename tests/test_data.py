"""Datamodules: shapes, value range, seeded splits, offline errors, on-disk formats."""

import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from guidelab.data import (
    CIFAR10DataModule,
    DatasetNotFoundError,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)

N_DIGITS = 1797


# --- digits ----------------------------------------------------------------------------------


def test_digits_metadata_before_setup():
    dm = DigitsDataModule()
    assert dm.image_shape == (1, 8, 8)
    assert dm.num_classes == 10
    assert dm.class_names == [str(d) for d in range(10)]
    assert DigitsDataModule(image_size=16).image_shape == (1, 16, 16)


def test_digits_range_and_labels():
    full = DigitsDataModule().load_full_dataset()
    x, y = full.images, full.labels
    assert x.shape == (N_DIGITS, 1, 8, 8) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))


def test_digits_batches_and_resize():
    dm = DigitsDataModule(batch_size=32, image_size=16)
    loader = dm.train_dataloader()
    x, y = next(iter(loader))
    assert x.shape == (32, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1.0 and x.max() <= 1.0
    # drop_last applies to train only
    assert len(loader) == len(dm.train_set) // 32
    assert sum(len(b[1]) for b in dm.val_dataloader()) == len(dm.val_set)


def _split_indices(seed, val_fraction=0.1):
    dm = DigitsDataModule(seed=seed, val_fraction=val_fraction)
    dm.setup()
    return dm.train_set.indices, dm.val_set.indices


def test_digits_split_is_seeded_disjoint_and_covering():
    train, val = _split_indices(0)
    assert (train, val) == _split_indices(0)
    assert val != _split_indices(1)[1]
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(N_DIGITS))
    assert len(val) == round(0.1 * N_DIGITS)
    assert len(_split_indices(0, val_fraction=0.5)[1]) == round(0.5 * N_DIGITS)


def test_real_images_deterministic_and_bounded():
    dm = DigitsDataModule(batch_size=16, seed=3)
    x1, y1 = dm.real_images(50)
    x2, y2 = DigitsDataModule(batch_size=7, seed=3).real_images(50)
    assert x1.shape == (50, 1, 8, 8) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[0], dm.val_set[0][0])
    assert dm.real_images(5, split="train")[0].shape == (5, 1, 8, 8)
    with pytest.raises(ValueError, match="180"):
        dm.real_images(181)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"batch_size": 0}, "batch_size"), ({"val_fraction": 1.0}, "val_fraction"), ({"num_workers": -1}, "num_workers")],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DigitsDataModule(**kwargs)


def test_hyperparameters_are_plain_and_saved(tmp_path):
    dm = ImageFolderDataModule(root=tmp_path, batch_size=5, channels=1)
    assert dm.hparams["batch_size"] == 5 and dm.hparams["channels"] == 1
    assert dm.hparams["root"] == str(tmp_path)
    torch.save(dict(dm.hparams), tmp_path / "hp.pt")
    assert torch.load(tmp_path / "hp.pt", weights_only=True)["root"] == str(tmp_path)


def test_persistent_workers_only_with_workers():
    assert DigitsDataModule(num_workers=1).train_dataloader().persistent_workers
    assert not DigitsDataModule(num_workers=0).train_dataloader().persistent_workers


# --- MNIST from hand-written IDX files -------------------------------------------------------


def _write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    n, rows, cols = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">4i", 2051, n, rows, cols) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">2i", 2049, n) + labels.tobytes())


def _fake_mnist(root: Path, n_train=40, n_test=24):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    splits = {}
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 3)):
        labels = ((np.arange(n) + offset) % 10).astype(np.uint8)
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 10:18, 10:18] = 255
        images[:, 0, 0] = labels * 20  # encodes the label in a pixel
        _write_idx(raw, prefix, images, labels)
        splits[prefix] = labels
    return splits


def test_mnist_reads_idx_files(tmp_path):
    labels = _fake_mnist(tmp_path)
    dm = MNISTDataModule(data_dir=tmp_path, download=False, batch_size=8)
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (40, 24)  # official splits, val = test
    x, y = dm.real_images(24)
    assert x.shape == (24, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == labels["t10k"].tolist()
    assert torch.allclose(x[:, 0, 0, 0], y.float() * 20 / 255 * 2 - 1, atol=1e-6)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (8, 1, 28, 28) and yb.dtype == torch.int64
    assert len(dm.train_dataloader()) == 5


def test_mnist_resize_and_pad_to_32(tmp_path):
    _fake_mnist(tmp_path)
    resized = MNISTDataModule(data_dir=tmp_path, image_size=32, download=False)
    padded = MNISTDataModule(data_dir=tmp_path, image_size=32, resize_mode="pad", download=False)
    assert resized.image_shape == padded.image_shape == (1, 32, 32)
    xr, _ = resized.real_images(4)
    xp, yp = padded.real_images(4)
    assert xr.shape == xp.shape == (4, 1, 32, 32)
    # padding shifts the original pixels by 2 and fills the border with -1
    assert torch.allclose(xp[:, 0, 2, 2], yp.float() * 20 / 255 * 2 - 1, atol=1e-6)
    assert (xp[:, :, :2, :] == -1).all() and (xp[:, :, 14:20, 14:20] == 1).all()
    assert not torch.equal(xr, xp)


# --- offline errors --------------------------------------------------------------------------


def test_missing_mnist_without_download_names_directory(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="MNIST"):
        dm.setup()


def test_failed_download_raises_fast_with_timeout_guard(tmp_path, monkeypatch):
    seen_timeouts = []

    def offline_urlopen(*args, **kwargs):
        seen_timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline_urlopen)
    dm = MNISTDataModule(data_dir=tmp_path, download=True)
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError, match="download failed") as info:
        dm.prepare_data()
    assert time.monotonic() - start < 10
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)
    assert seen_timeouts and all(t is not None for t in seen_timeouts)
    assert socket.getdefaulttimeout() is None  # restored


def test_missing_cifar_names_directory(tmp_path):
    dm = CIFAR10DataModule(data_dir=tmp_path, download=False)
    assert dm.image_shape == (3, 32, 32) and dm.num_classes == 10 and dm.class_names[0] == "airplane"
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py") as info:
        dm.prepare_data()
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


# --- image folder ----------------------------------------------------------------------------


def _image_tree(root: Path) -> None:
    colors = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    sizes = [(20, 30), (50, 40), (33, 33)]
    for name, color in colors.items():
        (root / name).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, color).save(root / name / f"{i}.png")


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder_resizes_and_converts(tmp_path, channels):
    _image_tree(tmp_path / "imgs")
    dm = ImageFolderDataModule(root=tmp_path / "imgs", image_size=16, channels=channels, val_fraction=0.5, batch_size=2)
    assert dm.class_names == ["cat", "dog"] and dm.num_classes == 2
    assert dm.image_shape == (channels, 16, 16)
    dm.setup()
    assert len(dm.train_set) == len(dm.val_set) == 3
    x, y = dm.real_images(3, split="val")
    assert x.shape == (3, channels, 16, 16) and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    for image, label in zip(x, y.tolist()):
        if channels == 3:  # cat is pure red, dog pure blue
            expected = torch.tensor([1.0, -1.0, -1.0] if label == 0 else [-1.0, -1.0, 1.0])
            assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=1e-5)
        else:  # grayscale of pure red/blue is a distinct mid-grey, not black or white
            assert image.std() < 1e-5 and -1 < image.mean() < 0


def test_image_folder_missing_root(tmp_path):
    dm = ImageFolderDataModule(root=tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match="nope"):
        dm.setup()


def test_image_folder_empty_tree(tmp_path):
    with pytest.raises(ValueError, match="<class_name>") as info:
        ImageFolderDataModule(root=tmp_path).setup()
    assert str(tmp_path) in str(info.value)


def test_image_folder_without_images(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no readable image files") as info:
        ImageFolderDataModule(root=tmp_path).setup()
    assert str(tmp_path) in str(info.value) and "<class_name>" in str(info.value)


# --- tensor caches ---------------------------------------------------------------------------


def test_image_folder_cache_matches_per_item_decoding(tmp_path):
    """The uint8 cache (decoded once) gives the PIL-per-item pipeline's images to within rounding."""
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    kwargs = dict(root=root, image_size=12, val_fraction=0.5, batch_size=3)
    cached, per_item = ImageFolderDataModule(**kwargs), ImageFolderDataModule(in_memory=False, **kwargs)
    xc, yc = cached.real_images(4, split="train")
    xp, yp = per_item.real_images(4, split="train")
    assert torch.equal(yc, yp) and xc.shape == xp.shape == (4, 3, 12, 12)
    assert (xc - xp).abs().max() <= 2.5 / 255 * 2  # resizing uint8 vs float: within ~2 grey levels
    batch = next(iter(cached.train_dataloader()))
    assert batch[0].shape == (3, 3, 12, 12) and batch[0].dtype == torch.float32


def test_tensor_cache_flips_each_image_independently():
    from guidelab.data.tensor_cache import TensorImageDataset

    ramp = torch.arange(4, dtype=torch.uint8).repeat(64, 1, 4, 1) * 80  # [64, 1, 4, 4], increasing left to right
    dataset = TensorImageDataset(ramp, torch.zeros(64), random_flip=True)
    torch.manual_seed(0)
    x, _ = dataset.__getitems__(list(range(64)))
    flipped = x[:, 0, 0, 0] > x[:, 0, 0, -1]
    assert 10 < int(flipped.sum()) < 54  # some flipped, some not: per image, not per batch
    plain = dataset.without_flip().__getitems__(list(range(64)))[0]
    assert torch.equal(x[~flipped], plain[~flipped]) and torch.equal(x[flipped], plain[flipped].flip(-1))
    assert plain.min() == -1.0 and plain.max() == pytest.approx(240 / 255 * 2 - 1)
