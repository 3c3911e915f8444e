"""Before/after loss curves of the digits DDPM (2,000 steps, seed 0): same math within noise?

    python experiments/benchmarks/loss_curve/compare.py BEFORE.csv AFTER.csv --out experiments/benchmarks/loss_curve

Reads two Lightning CSVLogger metrics.csv files, writes compare.png (train loss, raw and smoothed over
20 logged points, and the validation losses) and compare.json (the numbers quoted in the README).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def series(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in csv.DictReader(open(path)) if r.get(key)]
    return np.array([int(r["step"]) for r in rows]), np.array([float(r[key]) for r in rows])


def smooth(values: np.ndarray, window: int = 20) -> np.ndarray:
    return np.convolve(values, np.ones(window) / window, mode="valid")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    (sb, lb), (sa, la) = series(args.before, "train/loss"), series(args.after, "train/loss")
    assert np.array_equal(sb, sa), "the two runs logged different steps"
    late = sb >= 1000
    diff = la - lb
    # noise scale: how much the train loss moves between consecutive logged points within one run
    step_noise = float(np.std(np.diff(lb[late])) / np.sqrt(2))
    (vsb, vlb), (vsa, vla) = series(args.before, "val/loss"), series(args.after, "val/loss")
    numbers = {
        "logged_points": int(len(sb)),
        "first_step": int(sb[0]), "last_step": int(sb[-1]),
        "mean_train_loss_steps_1000_2000": {"before": float(lb[late].mean()), "after": float(la[late].mean())},
        "mean_abs_diff_train_loss": float(np.abs(diff).mean()),
        "mean_diff_train_loss_steps_1000_2000": float(diff[late].mean()),
        "single_point_noise_std_steps_1000_2000": step_noise,
        "smoothed_max_abs_diff_steps_1000_2000": float(np.abs(smooth(la[late]) - smooth(lb[late])).max()),
        "val_loss": {"steps": vsb.tolist(), "before": vlb.tolist(), "after": vla.tolist()},
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(sb, lb, color="tab:blue", alpha=0.25, lw=0.8)
    ax1.plot(sa, la, color="tab:orange", alpha=0.25, lw=0.8)
    ax1.plot(sb[19:], smooth(lb), color="tab:blue", label="before (7202e8d)")
    ax1.plot(sa[19:], smooth(la), color="tab:orange", label="after (fused EMA, fused AdamW, cached schedule)")
    ax1.set(xlabel="step", ylabel="train loss (MSE on eps)", yscale="log", title="digits DDPM, seed 0")
    ax1.legend(fontsize=7)
    ax2.plot(vsb, vlb, "o-", label="before")
    ax2.plot(vsa, vla, "s--", label="after")
    ax2.set(xlabel="step", ylabel="val loss (EMA weights)", title="validation")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "compare.png", dpi=110)
    (args.out / "compare.json").write_text(json.dumps(numbers, indent=2))
    print(json.dumps(numbers, indent=2))
    return numbers


if __name__ == "__main__":
    main()
