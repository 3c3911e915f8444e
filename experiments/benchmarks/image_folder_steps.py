"""Training steps/s with `data=image_folder` on ~10,000 small PNGs: decoding per item vs the uint8 cache.

    python experiments/benchmarks/image_folder_steps.py --make /tmp/digit_pngs      # write the PNGs once
    python experiments/benchmarks/image_folder_steps.py --root /tmp/digit_pngs      # time guidelab-train

The PNGs are scikit-learn's 8x8 digits, upscaled to 24x24 (bilinear) on a 28x28 canvas with a random shift of 0-4
pixels and a random contrast, as MNIST-like files `root/<digit>/<n>.png`. The timing runs the real
guidelab-train path (task=ddpm, digits UNet, trainer=cpu, image_size 8, batch 128, no logger) with a
callback that times optimizer steps `--warmup` .. `--warmup + --steps`; it prints one JSON line with
the set-up time (until the first step ends: includes decoding the whole folder when it is cached) and
steps/s. Run it with PYTHONPATH pointing at the code to measure (before/after a change).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image


def make_pngs(root: Path, count: int, seed: int = 0) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = F.interpolate(images, size=(24, 24), mode="bilinear", align_corners=False)
    for n in range(count):
        i = n % len(big)
        canvas = np.zeros((28, 28), dtype=np.float32)
        dy, dx = rng.integers(0, 5, size=2)
        canvas[dy:dy + 24, dx:dx + 24] = big[i, 0].numpy() * rng.uniform(0.7, 1.0)
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((canvas * 255).round().astype(np.uint8), mode="L").save(folder / f"{n:05d}.png")


class StepTimer(pl.Callback):
    result: dict = {}

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1:
            StepTimer.result["setup_s"] = round(time.perf_counter() - self.start, 2)
        if trainer.global_step == self.warmup:
            self.tic = time.perf_counter()
        elif trainer.global_step == self.warmup + self.steps:
            StepTimer.result["steps_per_s"] = round(self.steps / (time.perf_counter() - self.tic), 2)


def loader_only(args) -> dict:
    """Batches/s of the train loader alone: what the data path can feed, whatever the net costs."""
    from guidelab.data import ImageFolderDataModule

    tic = time.perf_counter()
    dm = ImageFolderDataModule(root=args.root, image_size=8, channels=1, batch_size=128, num_workers=args.num_workers)
    batches = iter(dm.train_dataloader())
    next(batches)
    setup_s = time.perf_counter() - tic
    for _ in range(args.warmup):
        next(batches)
    tic = time.perf_counter()
    n = 0
    for _ in range(args.steps):
        try:
            next(batches)
        except StopIteration:
            batches = iter(dm.train_dataloader())
            next(batches)
        n += 1
    result = {"label": args.label, "images": args.count, "num_workers": args.num_workers, "mode": "loader_only",
              "setup_s": round(setup_s, 2), "batches_per_s": round(n / (time.perf_counter() - tic), 2)}
    print(json.dumps(result))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make", type=Path, help="write the PNG tree here and exit")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--root", type=Path, help="the PNG tree to train on")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--label", default="", help="a name for this measurement in the JSON line")
    parser.add_argument("--loader-only", action="store_true",
                        help="time only the datamodule's train loader (batches/s), no training")
    args = parser.parse_args(argv)
    if args.make:
        make_pngs(args.make, args.count)
        print(f"wrote {args.count} PNGs under {args.make}")
        return {}
    from guidelab.apps.config import compose_config
    from guidelab.apps.train import train

    if args.loader_only:
        return loader_only(args)
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config("train", [
            "task=ddpm", "data=image_folder", f"data.root={args.root}", "data.image_size=8", "data.channels=1",
            "data.batch_size=128", f"data.num_workers={args.num_workers}", "trainer=cpu", "logger=none",
            f"trainer.max_steps={args.warmup + args.steps}", "trainer.max_epochs=-1", "trainer.enable_model_summary=false",
            "+trainer.limit_val_batches=0", f"paths.output_dir={out}",
            "+callbacks.timer._target_=__main__.StepTimer", f"+callbacks.timer.warmup={args.warmup}",
            f"+callbacks.timer.steps={args.steps}"])
        train(cfg)
    result = {"label": args.label, "images": args.count, "num_workers": args.num_workers, **StepTimer.result,
              "torch": torch.__version__}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
