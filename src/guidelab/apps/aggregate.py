"""guidelab-aggregate <dir>: every quality_diversity.json under a (multirun) dir in one table and one plot,
mean and spread across jobs (seeds) per guidance scale; logged to W&B in the multirun's group."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path

from guidelab.apps.config import ConfigError, ensure_writable
from guidelab.apps.errors import app_failures
from guidelab.evaluation.plots import plot_quality_diversity
from guidelab.evaluation.report import print_table
from guidelab.evaluation.result import METRICS


def read_report(path: Path) -> dict:
    """One job's quality_diversity.json, refusing (with the file's name) one that is damaged or of another kind."""
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); re-run the sweep that wrote it, or move it out of "
                          "the folder") from err
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) and "scale" in row for row in rows):
        raise ConfigError(f"{path} is not a guidelab-sweep report (expected {{'rows': [{{'scale': ..., ...}}, ...]}}); "
                          "re-run the sweep that wrote it, or move it out of the folder")
    return doc


def collect(root: Path) -> list[tuple[Path, dict]]:
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder: point guidelab-aggregate at a guidelab-sweep multirun dir")
    files = sorted(root.rglob("quality_diversity.json"))
    files = [f for f in files if f.name == "quality_diversity.json" and f.parent != root]
    if not files:
        raise ConfigError(f"no quality_diversity.json under {root}: point guidelab-aggregate at a guidelab-sweep "
                          "multirun dir (or a folder of sweep run dirs)")
    return [(f, read_report(f)) for f in files]


# what a sampling row costs; averaged over jobs like the metrics, without a spread
COSTS = ("nfe_per_sample", "s_per_sample", "samples_per_s")


def aggregate(documents: list[dict]) -> list[dict]:
    """One row per (method, scale): <metric> (mean over jobs), <metric>_std (sample std; None where fewer than two
    jobs have that metric, so no spread is claimed), the mean cost (COSTS) and num_runs. Rows written before
    sweeps named their method carry none and group together."""
    groups = defaultdict(lambda: defaultdict(list))
    for doc in documents:
        for row in doc["rows"]:
            for key in (*METRICS, *COSTS):
                value = row.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    groups[(row.get("method", ""), float(row["scale"]))][key].append(float(value))
    rows = []
    for method, scale in sorted(groups):
        row = {"method": method, "scale": scale} if method else {"scale": scale}
        values = groups[(method, scale)]
        for metric in METRICS:
            row[metric] = statistics.fmean(values[metric]) if values[metric] else None
            row[f"{metric}_std"] = statistics.stdev(values[metric]) if len(values[metric]) > 1 else None
        for cost in COSTS:
            if values[cost]:
                row[cost] = statistics.fmean(values[cost])
        row["num_runs"] = max(len(values[metric]) for metric in METRICS)
        rows.append(row)
    return rows


def log_aggregate_to_wandb(rows: list[dict], png: Path, group: str, save_dir: Path) -> None:
    try:
        import wandb

        from guidelab.apps.loggers import (AGGREGATE_FINISH_TIMEOUT_S, AGGREGATE_INIT_TIMEOUT_S, wandb_has_key,
                                           wandb_online_possible, wandb_settings)

        online = wandb_has_key() and os.environ.get("WANDB_MODE") not in ("offline", "dryrun") and wandb_online_possible()
        run = wandb.init(project="guidelab", group=group, job_type="aggregate", name=f"aggregate[{group}]",
                         dir=str(save_dir), mode="online" if online else "offline",
                         settings=wandb_settings(
                             float(os.environ.get("WANDB_INIT_TIMEOUT") or AGGREGATE_INIT_TIMEOUT_S),
                             AGGREGATE_FINISH_TIMEOUT_S))
        columns = list(dict.fromkeys(key for row in rows for key in row))  # a cost column may miss in some rows
        table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        run.log({"aggregate/table": table, "aggregate/curves": wandb.Image(str(png))})
        run.finish()
    except Exception as err:  # a dashboard problem must not lose the files already written
        print(f"warning: W&B logging of the aggregate failed: {err}")


def run_aggregate(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, help="a multirun dir of guidelab-sweep jobs")
    parser.add_argument("--no-wandb", action="store_true", help="only write files")
    args = parser.parse_args(argv)
    found = collect(args.root)
    ensure_writable(args.root, fix="make it writable, or copy the multirun dir to a writable place")
    for path, doc in found:
        pending = (doc.get("settings") or {}).get("methods_pending")
        if pending:  # a job that died after its first methods (guidelab-sweep writes its report after each)
            print(f"note: {path} is a partial sweep; its methods {', '.join(pending)} were never sampled, so their "
                  "rows average fewer runs (num_runs)")
    rows = aggregate([doc for _, doc in found])
    out = {"runs": [str(path) for path, _ in found], "rows": rows}
    (args.root / "aggregate.json").write_text(json.dumps(out, indent=2))
    png = args.root / "aggregate.png"
    plot_quality_diversity(rows, png, title=f"mean and spread over {len(found)} runs")
    print_table(rows, title=f"guided sampling across scales: mean ± std over {len(found)} runs")
    print(f"{len(found)} runs -> {args.root / 'aggregate.json'}, {png}")
    if not args.no_wandb:
        log_aggregate_to_wandb(rows, png, group=args.root.name, save_dir=args.root)
    return rows


def main(argv: list[str] | None = None) -> None:
    with app_failures("guidelab-aggregate"):
        run_aggregate(argv)


if __name__ == "__main__":
    main()
