"""Reporting a guided sweep: files on disk, a table on the terminal, and W&B / Lightning loggers."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import rich
import torch
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from torchvision.utils import save_image

from .plots import by_method, image_grid, metric_name, plot_grids, plot_quality_diversity, plot_trajectory
from .result import METRICS, SweepResult

TABLE_COLUMNS = ("method", "scale", *METRICS, "nfe_per_sample", "s_per_sample", "samples_per_s")
TABLE_HEADERS = ("method", "scale", "FID ↓", "accuracy ↑", "precision ↑", "recall ↑", "NFE/sample", "ms/sample",
                 "samples/s")
# the metric each "best" summary entry maximises (True) or minimises (False)
HIGHER_IS_BETTER = {"fid": False, "accuracy": True, "precision": True, "recall": True}


def _finite_or_none(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def jsonable(obj):
    """A copy of obj that strict JSON accepts: non-finite floats become null, tensors and arrays become lists."""
    if isinstance(obj, dict):
        return {str(key): jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(value) for value in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and numpy scalars
        return jsonable(obj.tolist())
    return str(obj)


def scale_tag(scale) -> str:
    """How a scale appears in keys and file names: 1 -> '1.0', -0.5 -> '-0.5'."""
    return str(float(scale))


def method_tag(method: str) -> str:
    """How a method appears in file names: characters other than letters, digits, - and _ become _."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in method) or "guidance"


def grid_row_length(result: SweepResult) -> int | None:
    """Images per grid row: the class count where it is small, since the sweep's targets cycle through the
    classes (0, 1, ..., 0, 1, ...), so every row holds one sample per class, each class in its own column."""
    num_classes = result.settings.get("num_classes")
    return num_classes if isinstance(num_classes, int) and 1 < num_classes <= 16 else None


def write_report(result: SweepResult, out_dir) -> dict[str, Path]:
    """Write quality_diversity.json, the curves of every method (quality_diversity.png) and, per method,
    its trajectory and sample grids into out_dir; return their paths keyed by file name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def target(name: str) -> Path:
        paths[name] = out_dir / name
        return paths[name]

    with open(target("quality_diversity.json"), "w") as f:
        json.dump(jsonable(result.to_json()), f, indent=2, allow_nan=False)
    plot_quality_diversity(result.rows, target("quality_diversity.png"))
    for method, trajectory in result.trajectory.items():
        if trajectory.get("t") and any(any(v) for v in trajectory["grad_norm"]):
            plot_trajectory(trajectory, target(f"guidance_trajectory_{method_tag(method)}.png"))
    per_row = grid_row_length(result)
    for method, by_scale in result.grids.items():
        grids = {scale: images for scale, images in by_scale.items() if images.numel()}
        if grids:
            plot_grids(grids, target(f"samples_{method_tag(method)}.png"), per_row=per_row)
            for scale, images in sorted(grids.items()):
                save_image(image_grid(images, nrow=per_row),
                           target(f"samples_{method_tag(method)}_w{scale_tag(scale)}.png"))
    return paths


def _format(value) -> str:
    if isinstance(value, str):
        return value
    value = _finite_or_none(value)
    return "–" if value is None else f"{value:.4g}"


def _cells(row: dict) -> list:
    """A row's values in TABLE_COLUMNS order, seconds per sample shown in milliseconds."""
    cells = [row.get(column) for column in TABLE_COLUMNS]
    seconds = _finite_or_none(row.get("s_per_sample"))
    cells[TABLE_COLUMNS.index("s_per_sample")] = None if seconds is None else 1000 * seconds
    return cells


def _with_spread(row: dict, cells: list[str]) -> list[str]:
    """Metric cells as "mean ± std" where the row aggregates several runs (guidelab-aggregate's rows)."""
    if row.get("num_runs", 1) < 2:
        return cells
    for metric in METRICS:
        column, spread = TABLE_COLUMNS.index(metric), _finite_or_none(row.get(f"{metric}_std"))
        if spread is not None and cells[column] != "–":
            cells[column] = f"{cells[column]} ± {spread:.2g}"
    return cells


def print_table(rows: list[dict], console: Console | None = None, title: str = "guided sampling across scales") -> None:
    """Print one line per (method, guidance scale) with its metrics (mean ± std for aggregated rows) and cost."""
    table = Table(title=title, caption=_best_caption(rows) or None, caption_justify="left")
    for header in TABLE_HEADERS:
        # a cell that does not fit wraps onto a second line; Rich's default cuts it ("0.086…")
        table.add_column(header, justify="left" if header == "method" else "right", overflow="fold")
    for group in by_method(rows).values():
        for row in group:
            table.add_row(*_with_spread(row, [_format(cell) for cell in _cells(row)]))
    # Rich's global console by default: the one a live progress bar (Lightning's, during training) draws on, so
    # the table goes above the bar instead of through it
    console = console or rich.get_console()
    if not console.is_terminal:
        # a file or a pipe (a SLURM job's log, `| tee`) has no width of its own and Rich assumes 80 columns:
        # there the table keeps its natural width (uncropped), so a log holds every row whole on one line
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if natural > console.width:
            table.width = natural
    console.print(table, crop=False)


def _figure_image(fig):
    """A wandb.Image of a matplotlib figure (rendered to PNG in memory), closing the figure."""
    import wandb
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    buffer.seek(0)
    return wandb.Image(Image.open(buffer).convert("RGB"))


def _grid_image(images: torch.Tensor, caption: str, per_row: int | None = None):
    import wandb

    pixels = (image_grid(images, nrow=per_row) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return wandb.Image(pixels, caption=caption)


def best_by_method(rows: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per method, the best value of every metric across scales and the scale reaching it: {method: {metric:
    (value, scale)}}."""
    best = {}
    for name, group in by_method(rows).items():
        best[name] = {}
        for metric, higher in HIGHER_IS_BETTER.items():
            scored = [(row[metric], row["scale"]) for row in group if _finite_or_none(row.get(metric)) is not None]
            if scored:
                value, scale = max(scored) if higher else min(scored)
                best[name][metric] = (float(value), float(scale))
    return best


def _best(rows: list[dict], prefix: str) -> dict:
    """best_by_method as W&B summary entries (`{prefix}/{method}/best_fid`, `..._scale`); with one method also
    as `{prefix}/best_fid`."""
    summary = {}
    best = best_by_method(rows)
    for name, metrics in best.items():
        keys = [f"{prefix}/{name}" if name else prefix] + ([prefix] if len(best) == 1 and name else [])
        for metric, (value, scale) in metrics.items():
            for key in keys:
                summary[f"{key}/best_{metric}"] = value
                summary[f"{key}/best_{metric}_scale"] = scale
    return summary


def _best_caption(rows: list[dict]) -> str:
    """One line per method under the table: "classifier: best FID 0.51 at w=4, accuracy 0.97 at w=4, ..."."""
    lines = []
    for name, metrics in best_by_method(rows).items():
        parts = [f"{metric_name(metric)} {value:.4g} at w={scale:g}"
                 for metric, (value, scale) in metrics.items()]
        if parts:
            lines.append(f"{name + ': ' if name else ''}best " + ", ".join(parts))
    return "\n".join(lines)


def _table(rows: list[dict]):
    import wandb

    columns = [*TABLE_COLUMNS, "scale_schedule"]  # how w varied along the trajectory (constant, cosine, interval)
    return wandb.Table(columns=columns,
                       data=[[value if isinstance(value, str) else _finite_or_none(value) for value in
                              (row.get(column) for column in columns)] for row in rows])


def _wandb_payload(result: SweepResult, prefix: str) -> dict:
    """The whole sweep for one W&B history row: the table of every (method, scale), the curves of all
    methods (one figure), per method its line charts, trajectory and a sample grid per scale."""
    import wandb

    groups = by_method(result.rows)
    payload = {f"{prefix}/table": _table([row for group in groups.values() for row in group]),
               f"{prefix}/curves": _figure_image(plot_quality_diversity(result.rows))}
    for name, rows in groups.items():
        key = f"{prefix}/{name}" if name else prefix
        table = _table(rows)
        for metric in (*METRICS, "samples_per_s"):
            payload[f"{key}/{metric}_vs_scale"] = wandb.plot.line(
                table, "scale", metric, title=f"{name}: {metric} vs guidance scale")
        payload[f"{key}/fid_vs_accuracy"] = wandb.plot.scatter(table, "accuracy", "fid", title=f"{name}: FID vs accuracy")
        payload[f"{key}/precision_vs_recall"] = wandb.plot.scatter(
            table, "recall", "precision", title=f"{name}: precision vs recall")
    per_row = grid_row_length(result)
    for name, by_scale in result.grids.items():
        for scale, images in sorted(by_scale.items()):
            if images.numel():
                payload[f"{prefix}/samples/{name}/w={scale_tag(scale)}"] = _grid_image(
                    images, f"{name}, w = {float(scale):g}", per_row)

    for name, trajectory in result.trajectory.items():
        if not (trajectory.get("t") and any(any(v) for v in trajectory["grad_norm"])):
            continue
        keys = [f"w={scale_tag(scale)}" for scale in trajectory["scales"]]
        for series_name, series, title in (
                ("grad_norm", trajectory["grad_norm"], "mean guidance-gradient norm vs t"),
                ("p_target", trajectory["p_target"], "guide's p(target | x_t) vs t")):
            ys = [[_finite_or_none(value) for value in line] for line in series]
            payload[f"{prefix}/{name}/{series_name}_vs_t"] = wandb.plot.line_series(
                xs=list(trajectory["t"]), ys=ys, keys=keys, title=f"{name}: {title}", xname="t")
        payload[f"{prefix}/{name}/trajectory"] = _figure_image(plot_trajectory(trajectory))
    return payload


def log_to_wandb(result: SweepResult, run, step: int | None = None, prefix: str = "guidance") -> None:
    """Log the sweep to a W&B run in one history row; does nothing for None or a non-W&B object, never raises.

    `step` goes into the row as `trainer/global_step` (the x-axis WandbLogger defines) rather than as the W&B
    step: W&B silently drops rows whose step is behind its own counter, which Lightning has already advanced.
    """
    try:
        import wandb

        if run is None or not isinstance(run, wandb.Run):  # e.g. Lightning's _DummyExperiment on rank > 0
            return
        payload = _wandb_payload(result, prefix)
        if step is not None:
            payload["trainer/global_step"] = step
        run.log(payload)
        run.summary.update(_best(result.rows, prefix))
    except Exception as error:  # a logging failure must never end a training run
        warnings.warn(f"logging the guided sweep to W&B failed: {error!r}", RuntimeWarning, stacklevel=2)


def log_to_loggers(result: SweepResult, loggers, step: int | None = None, prefix: str = "guidance") -> None:
    """W&B loggers get the full report; any other Lightning logger gets `{prefix}/{method}/{metric}_w{scale}`
    scalars (`{prefix}/{metric}_w{scale}` for rows without a method)."""
    from pytorch_lightning.loggers import WandbLogger

    scalars = {
        f"{prefix}/{row['method'] + '/' if row.get('method') else ''}{metric}_w{scale_tag(row['scale'])}": float(row[metric])
        for row in result.rows for metric in METRICS if _finite_or_none(row.get(metric)) is not None
    }
    for logger in loggers or []:
        try:
            if isinstance(logger, WandbLogger):
                log_to_wandb(result, logger.experiment, step=step, prefix=prefix)
            elif scalars:
                logger.log_metrics(scalars, step=step)
        except Exception as error:  # as in log_to_wandb: reporting must not end a run
            warnings.warn(f"logging the guided sweep to {type(logger).__name__} failed: {error!r}",
                          RuntimeWarning, stacklevel=2)
