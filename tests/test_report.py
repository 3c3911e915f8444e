"""The sweep report: JSON and PNG files, the terminal table, W&B (offline) and CSV logging."""

import csv
import io
import json
import math

import pytest
import torch
from PIL import Image
from rich.console import Console

from guidelab.evaluation.plots import image_grid, plot_grids, plot_quality_diversity
from guidelab.evaluation.report import log_to_loggers, log_to_wandb, print_table, write_report
from guidelab.evaluation.result import METRICS, SweepResult

SCALES = [-1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0]


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def fake_result(nan_fid_at: float | None = None, methods=("classifier",)) -> SweepResult:
    generator = torch.Generator().manual_seed(0)
    rows, grids, trajectories = [], {}, {}
    for m, method in enumerate(methods):
        for i, w in enumerate(SCALES):
            rows.append({
                "method": method, "scale": w, "fid": 30.0 - 2 * i + i * i * 0.8 + m,
                "accuracy": min(0.1 + 0.14 * i, 0.99) - 0.05 * m, "precision": 0.5 + 0.06 * i,
                "recall": 0.7 - 0.08 * i, "samples_per_s": 120.0 + i, "nfe_per_sample": 30.0 * (m + 1),
                "s_per_sample": 0.004 * (m + 1), "num_samples": 64,
            })
            if w == nan_fid_at:
                rows[-1]["fid"] = float("nan")
        t = list(range(99, -1, -10))  # 10 sampling steps, noisiest first
        trajectories[method] = {
            "t": t, "scales": SCALES,
            "grad_norm": [[abs(w) * (1 + s / 100) + 1e-3 for s in t] for w in SCALES],
            "p_target": [[min(1.0, 0.1 + 0.1 * abs(w) * (1 - s / 100)) for s in t] for w in SCALES],
        }
        grids[method] = {w: torch.rand(8, 1, 8, 8, generator=generator) * 2 - 1 for w in SCALES}
    return SweepResult(rows=rows, settings={"sampler": "ddim", "steps": 10, "eta": float("inf")},
                       timings={"sampling_s": 1.5, "metrics_s": 0.5, "total_s": 2.0},
                       grids=grids, trajectory=trajectories)


def reject_constant(name):
    raise AssertionError(f"non-standard JSON constant {name}")


def test_write_report_files(tmp_path):
    out = tmp_path / "report" / "nested"
    paths = write_report(fake_result(nan_fid_at=8.0), out)

    expected = {"quality_diversity.json", "quality_diversity.png", "guidance_trajectory_classifier.png",
                "samples_classifier.png", *(f"samples_classifier_w{w}.png" for w in SCALES)}
    assert set(paths) == expected
    assert all(path.parent == out and path.is_file() for path in paths.values())

    document = json.loads(paths["quality_diversity.json"].read_text(), parse_constant=reject_constant)
    assert [row["scale"] for row in document["rows"]] == SCALES
    for row in document["rows"]:
        assert {"scale", *METRICS} <= set(row)
    assert document["rows"][-1]["fid"] is None
    assert document["rows"][0]["fid"] == pytest.approx(30.0)
    assert document["settings"]["eta"] is None
    assert len(document["trajectory"]["classifier"]["t"]) == 10

    with Image.open(paths["quality_diversity.png"]) as image:
        assert image.width >= 800 and image.height >= 500
    with Image.open(paths["guidance_trajectory_classifier.png"]) as image:
        assert image.width >= 600
    # 8 images of 8x8 enlarged to 32x32 on a 3-wide grid with 2px padding: 3 * 34 + 2 = 104 px
    with Image.open(paths["samples_classifier_w1.0.png"]) as image:
        assert image.size == (104, 104)
    with Image.open(paths["samples_classifier.png"]) as image:
        assert image.width >= 600 and image.height >= len(SCALES) * 100  # one strip per scale, stacked


def test_write_report_without_trajectory_or_grids(tmp_path):
    result = fake_result()
    result.trajectory, result.grids = {}, {}
    result.rows = result.rows[:1]  # a single scale must still plot
    paths = write_report(result, tmp_path)
    assert set(paths) == {"quality_diversity.json", "quality_diversity.png"}


def test_image_grid_range_and_upscaling():
    images = torch.linspace(-3, 3, 8 * 8 * 8).reshape(8, 1, 8, 8)  # out-of-range values get clamped
    grid = image_grid(images, nrow=4)
    assert grid.shape == (3, 2 * 34 + 2, 4 * 34 + 2)
    assert grid.min() >= 0 and grid.max() <= 1
    assert grid[:, 2:34, 2:34].min() == 0  # the most negative pixel maps to 0 (black)
    assert image_grid(torch.zeros(4, 3, 64, 64)).shape == (3, 2 * 66 + 2, 2 * 66 + 2)  # big ones stay as is


def test_plots_skip_non_finite_values():
    rows = fake_result(nan_fid_at=8.0).rows
    figure = plot_quality_diversity(rows)
    fid_vs_scale = figure.axes[0].lines[0]
    assert len(fid_vs_scale.get_xdata()) == len(SCALES) - 1
    assert all(math.isfinite(y) for y in fid_vs_scale.get_ydata())
    grids_figure = plot_grids(fake_result().grids["classifier"])
    assert [ax.get_title() for ax in grids_figure.axes][:2] == ["w = -1", "w = 0"]


def test_print_table():
    console = Console(record=True, width=120)
    print_table(fake_result(nan_fid_at=2.0).rows, console=console)
    text = console.export_text()
    assert "accuracy" in text and "samples/s" in text
    assert "30" in text and "0.38" in text and "–" in text  # fid at w=-1, accuracy at w=0.5, the NaN fid


def test_print_table_keeps_every_cell_whole():
    """A log file gets the whole table on one line per row (Rich would cut it to 80 columns: "classif…",
    "0.086…"); a terminal narrower than the table folds cells instead of cutting them."""
    rows = [{**row, "method": "classifier_guidance_long_name", "accuracy": 0.086666} for row in fake_result().rows]
    log = io.StringIO()
    print_table(rows, console=Console(file=log, width=80))  # not a terminal
    lines = log.getvalue().splitlines()
    assert "…" not in log.getvalue() and max(len(line) for line in lines) > 80
    rows_shown = [line for line in lines if line.startswith("│")]
    assert sum("classifier_guidance_long_name" in line and "0.08667" in line for line in rows_shown) == len(SCALES)
    terminal = Console(file=io.StringIO(), width=60, force_terminal=True, color_system=None)
    print_table(rows, console=terminal)
    text = terminal.file.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 60


def test_log_to_wandb_offline(tmp_path):
    import wandb

    run = wandb.init(mode="offline", dir=tmp_path, project="test")
    log_to_wandb(fake_result(), run, step=3)
    summary = dict(run.summary)
    run.finish()

    assert summary["guidance/best_accuracy"] == pytest.approx(0.94)
    assert summary["guidance/best_fid_scale"] == 0.0  # fid 28.8
    assert summary["trainer/global_step"] == 3  # the step rides along as WandbLogger's x-axis
    media = next((tmp_path / "wandb").glob("offline-run-*")) / "files" / "media"
    tables = list(media.rglob("*.table.json"))
    images = list(media.rglob("*.png"))
    main_table = [path for path in tables if path.name.startswith("table_")]
    assert main_table and len(tables) >= 3  # the table and the two line_series tables
    assert len(images) >= len(SCALES) + 2  # one grid per scale, the curves and the trajectory figure
    document = json.loads(main_table[0].read_text())
    assert document["columns"] == ["method", "scale", *METRICS, "nfe_per_sample", "s_per_sample", "samples_per_s",
                                   "scale_schedule"]
    assert [row[1] for row in document["data"]] == SCALES
    assert any("w=1.0" in str(path) for path in images)


def test_log_to_wandb_never_raises():
    import wandb
    from lightning_fabric.loggers.logger import _DummyExperiment

    class BrokenRun(wandb.Run):
        def __init__(self):  # skip the real set-up; only .log matters here
            pass

        def log(self, *args, **kwargs):
            raise RuntimeError("network down")

    log_to_wandb(fake_result(), None)  # nothing to log to: silently does nothing
    log_to_wandb(fake_result(), _DummyExperiment())  # what Lightning hands out on rank > 0
    with pytest.warns(RuntimeWarning, match="network down"):
        log_to_wandb(fake_result(), BrokenRun())


def test_log_to_loggers_csv(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="sweep", version=0)
    log_to_loggers(fake_result(nan_fid_at=8.0), [logger], step=5)
    logger.save()
    with open(tmp_path / "sweep" / "version_0" / "metrics.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["guidance/classifier/accuracy_w1.0"]) == pytest.approx(0.52)
    assert float(row["guidance/classifier/recall_w-1.0"]) == pytest.approx(0.7)
    assert "guidance/classifier/fid_w8.0" not in row  # non-finite values are left out
    assert "guidance/classifier/fid_w4.0" in row and row["step"] == "5"


def test_several_methods_one_table_one_plot(tmp_path):
    result = fake_result(methods=("classifier", "cgpp"))
    paths = write_report(result, tmp_path)
    assert {"samples_cgpp.png", "samples_cgpp_w2.0.png", "guidance_trajectory_cgpp.png"} <= set(paths)
    document = json.loads(paths["quality_diversity.json"].read_text())
    assert [row["method"] for row in document["rows"]] == ["classifier"] * 7 + ["cgpp"] * 7
    figure = plot_quality_diversity(result.rows)
    fid_vs_accuracy = figure.axes[2]
    assert len(fid_vs_accuracy.lines) == 2  # one curve per method
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["classifier (30 NFE, 4 ms/sample)", "cgpp (60 NFE, 8 ms/sample)"]
    console = Console(record=True, width=160)
    print_table(result.rows, console=console)
    text = console.export_text()
    assert "cgpp" in text and "NFE/sample" in text and "60" in text


def test_log_several_methods_to_wandb(tmp_path):
    import wandb

    run = wandb.init(mode="offline", dir=tmp_path, project="test")
    log_to_wandb(fake_result(methods=("classifier", "cgpp")), run)
    summary = dict(run.summary)
    run.finish()
    assert summary["guidance/cgpp/best_accuracy"] == pytest.approx(0.89)
    assert summary["guidance/classifier/best_accuracy"] == pytest.approx(0.94)
    assert "guidance/best_accuracy" not in summary  # with several methods, only per-method bests
    images = list((next((tmp_path / "wandb").glob("offline-run-*")) / "files" / "media").rglob("*.png"))
    assert sum("cgpp" in str(path) for path in images) >= len(SCALES)  # a grid per scale of each method


def test_aggregate_averages_cost_and_the_table_shows_the_spread():
    """guidelab-aggregate's rows: metrics as mean and sample std, the cost columns as means (they printed "–"),
    and the table reads "mean ± std" for rows over several runs."""
    from guidelab.apps.aggregate import aggregate

    def doc(fid, seconds):
        return {"rows": [{"method": "classifier", "scale": 2.0, "fid": fid, "accuracy": 0.9, "precision": 0.5,
                          "recall": float("nan"), "nfe_per_sample": 60.0, "s_per_sample": seconds,
                          "samples_per_s": 1 / seconds}]}

    (row,) = aggregate([doc(1.0, 0.004), doc(3.0, 0.006)])
    assert row["fid"] == 2.0 and row["fid_std"] == pytest.approx(math.sqrt(2))
    assert row["recall"] is None and row["num_runs"] == 2
    assert row["nfe_per_sample"] == 60.0 and row["s_per_sample"] == pytest.approx(0.005)
    assert row["samples_per_s"] == pytest.approx((250 + 1 / 0.006) / 2)
    console = Console(record=True, width=200)
    print_table([row], console=console, title="over 2 runs")
    line = next(line for line in console.export_text().splitlines() if "classifier" in line)
    cells = [cell.strip() for cell in line.strip("│ ").split("│")]
    assert cells == ["classifier", "2", "2 ± 1.4", "0.9 ± 0", "0.5 ± 0", "–", "60", "5", "208.3"]
    (single,) = aggregate([doc(1.0, 0.004)])
    console = Console(record=True, width=200)
    print_table([single], console=console)
    assert "±" not in console.export_text()
    # a metric only one of two runs has (the other's was NaN) gets its value and no spread, not "± 0"
    half = doc(3.0, 0.006)
    half["rows"][0]["precision"] = float("nan")
    (row,) = aggregate([doc(1.0, 0.004), half])
    assert row["num_runs"] == 2 and row["precision"] == 0.5 and row["precision_std"] is None
    console = Console(record=True, width=200)
    print_table([row], console=console)
    line = next(line for line in console.export_text().splitlines() if "classifier" in line)
    assert [cell.strip() for cell in line.strip("│ ").split("│")][2:5] == ["2 ± 1.4", "0.9 ± 0", "0.5"]


def test_trajectory_plot_spans_the_whole_trajectory_and_names_unguided_scales():
    """A guidance interval leaves the noisiest steps unguided: the x-axis still spans every step, noisiest on
    the left, and a scale whose classifier never ran says so in the legend instead of an empty entry."""
    from guidelab.evaluation.plots import plot_trajectory, plt

    t = [900, 700, 500, 300, 100]
    nan = float("nan")
    trajectory = {"t": t, "scales": [0.0, 2.0],
                  "grad_norm": [[None] * 5, [nan, nan, 0.5, 0.4, 0.3]],
                  "p_target": [[None] * 5, [nan, nan, 0.3, 0.6, 0.9]]}
    fig = plot_trajectory(trajectory)
    for ax in fig.axes:
        assert ax.get_xlim() == (900, 100)
        assert [text.get_text() for text in ax.get_legend().get_texts()] == ["w=0 (classifier not run)", "w=2"]
    plt.close(fig)


def test_sample_grids_put_one_class_per_column(tmp_path):
    """The sweep's targets cycle through the classes, so with the class count recorded (4 here) every grid row
    holds classes 0..3 in order: 8 images of 32 px on a 4-wide grid, 2 px padding, are 4 * 34 + 2 = 138 px wide
    and 2 rows high (the square default would be 3 wide)."""
    result = fake_result()
    result.settings["num_classes"] = 4
    paths = write_report(result, tmp_path)
    with Image.open(paths["samples_classifier_w1.0.png"]) as image:
        assert image.size == (138, 70)
    result.settings["num_classes"] = 1000  # too many for a row: the square default
    paths = write_report(result, tmp_path / "many")
    with Image.open(paths["samples_classifier_w1.0.png"]) as image:
        assert image.size == (104, 104)


def test_print_table_names_each_methods_best_scales():
    """Under the table, per method: the best value of each metric across scales and the scale reaching it (FID
    lowest, the others highest), the same figures the W&B summary holds."""
    console = Console(record=True, width=200)
    print_table(fake_result(methods=("classifier", "cgpp")).rows, console=console)
    lines = [line.strip() for line in console.export_text().splitlines()]
    # fake_result: fid 30 - 2i + 0.8i^2 (+1 for the second method) is lowest at i=1 (w=0); accuracy, precision
    # rise with i (accuracy capped at 0.99 - 0.05m), recall falls
    assert "classifier: best FID 28.8 at w=0, accuracy 0.94 at w=8, precision 0.86 at w=8, recall 0.7 at w=-1" in lines
    assert "cgpp: best FID 29.8 at w=0, accuracy 0.89 at w=8, precision 0.86 at w=8, recall 0.7 at w=-1" in lines


def test_print_table_goes_through_richs_global_console():
    """Without a console of its own the table is printed on Rich's global console, where Lightning's progress bar
    lives during training (the guided-sampling callback prints it mid-fit), so it lands above the bar."""
    import rich

    log = io.StringIO()
    rich.reconfigure(file=log, width=200)
    try:
        print_table(fake_result().rows)
    finally:
        rich.reconfigure()
    assert "guided sampling across scales" in log.getvalue() and "classifier" in log.getvalue()


def test_aggregate_names_a_partial_sweep(tmp_path, capsys):
    """A job that died after its first method left a report of that method (settings.methods_pending); the
    aggregate says so and averages each method over the jobs that sampled it."""
    from guidelab.apps.aggregate import run_aggregate

    def row(method, fid):
        return {"method": method, "scale": 1.0, "fid": fid, "accuracy": 0.5, "precision": 0.5, "recall": 0.5}

    jobs = {"0": {"rows": [row("classifier", 1.0), row("cgpp", 2.0)], "settings": {"methods_pending": []}},
            "1": {"rows": [row("classifier", 3.0)], "settings": {"methods_pending": ["cgpp"]}}}
    for job, doc in jobs.items():
        (tmp_path / job).mkdir()
        (tmp_path / job / "quality_diversity.json").write_text(json.dumps(doc))
    rows = run_aggregate([str(tmp_path), "--no-wandb"])
    out = capsys.readouterr().out
    assert f"note: {tmp_path / '1' / 'quality_diversity.json'} is a partial sweep; its methods cgpp" in out
    assert out.count("note:") == 1  # the complete job gets none
    assert {r["method"]: (r["fid"], r["num_runs"]) for r in rows} == {"classifier": (2.0, 2), "cgpp": (2.0, 1)}
