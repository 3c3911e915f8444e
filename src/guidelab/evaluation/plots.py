"""Matplotlib figures of a guided sweep: the quality-diversity trade-off, guidance trajectories, sample grids."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # never needs a display; must precede the pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from .result import METRICS  # noqa: E402

METRIC_LABELS = {
    "fid": "FID (lower is better)",
    "accuracy": "accuracy w.r.t. target class",
    "precision": "precision (quality)",
    "recall": "recall (diversity)",
}
MIN_GRID_CELL_PX = 32


def metric_name(metric: str) -> str:
    """How a metric is named in titles and captions: "FID", "accuracy", ..."""
    return "FID" if metric == "fid" else metric


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_pairs(xs, ys, labels=None) -> tuple[list[float], list[float], list]:
    """The (x, y, label) triples whose coordinates are both finite, as three lists."""
    labels = labels if labels is not None else [None] * len(xs)
    kept = [(float(x), float(y), label) for x, y, label in zip(xs, ys, labels) if _finite(x) and _finite(y)]
    return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]


def _points(rows: list[dict], x_key: str, y_key: str) -> tuple[list[float], list[float], list[float]]:
    """(xs, ys, scales) of the rows where both coordinates are finite."""
    return _finite_pairs([r.get(x_key) for r in rows], [r.get(y_key) for r in rows], [r["scale"] for r in rows])


def _finish(fig, path, rect=(0, 0, 1, 1)) -> plt.Figure:
    fig.tight_layout(rect=rect)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes, color="gray")


def by_method(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by their `method` (rows without one form the group ""), each group in scale order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get("method", "")), []).append(row)
    return {name: sorted(group, key=lambda row: row["scale"]) for name, group in groups.items()}


def method_label(name: str, rows: list[dict]) -> str:
    """A legend entry: the method and its cost (network evaluations and milliseconds per sample)."""
    cost = []
    if _finite(rows[0].get("nfe_per_sample")):
        cost.append(f"{rows[0]['nfe_per_sample']:g} NFE")
    if _finite(rows[0].get("s_per_sample")):
        cost.append(f"{1000 * rows[0]['s_per_sample']:.3g} ms/sample")
    return f"{name or 'guidance'}" + (f" ({', '.join(cost)})" if cost else "")


def _parametric(ax, groups, x_key, y_key, title) -> None:
    """One curve per method through the sweep in scale order, each point labelled with its scale."""
    drawn = False
    for name, rows in groups.items():
        xs, ys, scales = _points(rows, x_key, y_key)
        drawn = drawn or bool(xs)
        (line,) = ax.plot(xs, ys, "o-", label=method_label(name, rows))
        for x, y, scale in zip(xs, ys, scales):
            ax.annotate(f"{scale:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line.get_color())
    if not drawn:
        _no_data(ax)
    ax.set(title=title, xlabel=METRIC_LABELS[x_key], ylabel=METRIC_LABELS[y_key])
    ax.grid(True, alpha=0.3)


def plot_quality_diversity(rows: list[dict], path=None, title=None) -> plt.Figure:
    """Every metric against guidance scale, plus the FID-accuracy and precision-recall trade-off curves,
    one curve per method (legend: the method's network evaluations and time per sample).

    Rows that also hold `<metric>_std` (aggregates over seeds) get that spread as error bars."""
    groups = by_method(rows)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    metric_axes = [axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]]
    for ax, metric in zip(metric_axes, METRICS):
        drawn = False
        for name, group in groups.items():
            xs, ys, _ = _points(group, "scale", metric)
            drawn = drawn or bool(xs)
            spread = [r.get(f"{metric}_std") for r in group if _finite(r.get(metric))]
            if spread and all(_finite(v) for v in spread):
                ax.errorbar(xs, ys, yerr=spread, fmt="o-", capsize=3, label=name or None)
            else:
                ax.plot(xs, ys, "o-", label=name or None)
        if not drawn:
            _no_data(ax)
        ax.set(title=f"{metric_name(metric)} vs guidance scale", xlabel="guidance scale w",
               ylabel=METRIC_LABELS[metric])
        ax.grid(True, alpha=0.3)
    _parametric(axes[0, 2], groups, "accuracy", "fid", "FID vs accuracy (fidelity trade-off)")
    _parametric(axes[1, 2], groups, "recall", "precision", "precision vs recall (quality vs diversity)")
    default = ("Guidance methods" if len(groups) > 1 else "Classifier guidance") + ": quality-diversity trade-off"
    fig.suptitle(title or default + " across scales")
    if len(groups) > 1 or any(name for name in groups):  # one legend under the panels: method and its cost
        columns = min(len(groups), 3)
        fig.legend(*axes[0, 2].get_legend_handles_labels(), loc="lower center", ncol=columns, fontsize=8)
        return _finish(fig, path, rect=(0, 0.035 * math.ceil(len(groups) / columns) + 0.01, 1, 1))
    return _finish(fig, path)


def plot_trajectory(trajectory: dict, path=None) -> plt.Figure:
    """Mean guidance-gradient norm and the guide's p(target | x_t) along the sampling trajectory, per scale."""
    t = list(trajectory["t"])
    fig, (ax_grad, ax_prob) = plt.subplots(1, 2, figsize=(13, 4.5))
    norms_seen = []
    for scale, grad_norms, p_target in zip(trajectory["scales"], trajectory["grad_norm"], trajectory["p_target"]):
        xs, ys, _ = _finite_pairs(t, grad_norms)
        # a scale whose classifier never ran (w=0, or every step outside a guidance interval) draws no line
        label = f"w={float(scale):g}" + ("" if xs or _finite_pairs(t, p_target)[0] else " (classifier not run)")
        norms_seen += ys
        ax_grad.plot(xs, ys, label=label)
        xs, ys, _ = _finite_pairs(t, p_target)
        ax_prob.plot(xs, ys, label=label)
    if norms_seen and all(y > 0 for y in norms_seen):
        ax_grad.set_yscale("log")
    ax_grad.set(title="mean guidance-gradient norm", ylabel="mean guidance-gradient norm")
    ax_prob.set(title="guide's p(target | x_t)", ylabel="p(target | x_t) (mean)", ylim=(-0.02, 1.02))
    for ax in (ax_grad, ax_prob):
        # the whole trajectory, in sampling order (t = T-1 down to 0, left to right), so that steps where no
        # row was guided (outside a guidance interval) show as the gap they are
        if len(t) > 1:
            ax.set_xlim(t[0], t[-1])
        ax.set_xlabel("timestep t (sampling runs left to right, noisiest first)")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(title="scale", fontsize=8)
    return _finish(fig, path)


def image_grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Tile [n, C, H, W] images in [-1, 1] into one [C', H', W'] image in [0, 1]; tiny images are enlarged."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty [n, C, H, W] batch, got shape {tuple(images.shape)}")
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2)
    factor = math.ceil(MIN_GRID_CELL_PX / min(images.shape[-2:]))
    if factor > 1:
        images = F.interpolate(images, scale_factor=factor, mode="nearest")
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0).clamp(0, 1)


def plot_grids(grids: dict[float, torch.Tensor], path=None, per_row: int | None = None) -> plt.Figure:
    """One panel per guidance scale, titled with its scale: `per_row` images across (default up to 16), then
    wrapping."""
    if not grids:
        raise ValueError("plot_grids needs at least one scale's images")
    scales = sorted(grids)
    tiles = [image_grid(grids[scale], nrow=min(len(grids[scale]), per_row or 16)) for scale in scales]
    height = max(tile.shape[-2] for tile in tiles)
    width = max(tile.shape[-1] for tile in tiles)
    panel_w = 12.0
    panel_h = panel_w * height / width + 0.4  # room for the title
    fig, axes = plt.subplots(len(scales), 1, figsize=(panel_w, panel_h * len(scales)), squeeze=False)
    for ax, scale, tile in zip(axes[:, 0], scales, tiles):
        ax.imshow(tile.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"w = {float(scale):g}")
        ax.axis("off")
    return _finish(fig, path)
