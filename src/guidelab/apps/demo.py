"""guidelab-demo: the whole story on the embedded digits, start to finish, on a CPU.

Trains the evaluation classifier, the noisy guidance classifier and the DDPM (configs
experiment/digits_*, with the shorter budgets in DEMO_BUDGET so the whole job fits in about five
minutes on a 2-core CPU), then sweeps the guidance scales and prints the quality-diversity table.
Each stage takes Hydra overrides prefixed by its name (they come after DEMO_BUDGET, so they win):

    guidelab-demo ddpm.trainer.max_steps=5000 sweep.guidance.samples_per_scale=1000 --logger csv
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import datetime
from pathlib import Path

from rich.console import Console

from guidelab.apps.config import compose_config, route_overrides
from guidelab.apps.errors import app_failures
from guidelab.apps.notices import quiet_library_notices
from guidelab.apps.sweep import run_sweep
from guidelab.apps.train import train
from guidelab.evaluation.report import print_table

STAGES = {"eval_classifier": "digits_eval_classifier", "classifier": "digits_classifier", "ddpm": "digits_ddpm"}
# The demo's budget per stage, shorter than the digits_* recipes (which experiments such as cg_vs_cfg
# share): 1,500 DDPM steps instead of 2,500, 600 classifier steps instead of 1,200, and a sweep of 300
# samples per scale with 25 DDIM steps instead of 500 x 40. Same shape of results (see
# experiments/digits/README.md), under 300 s instead of ~620 s on the project's 2-core CPU.
DEMO_BUDGET = {
    "eval_classifier": [],
    "classifier": ["trainer.max_steps=600"],
    "ddpm": ["trainer.max_steps=1500"],
    "sweep": ["guidance.samples_per_scale=300", "guidance.steps=25"],
}


def run_demo(argv: list[str] | None = None) -> dict:
    """The demo; returns the sweep result, report paths, stage timings and checkpoints."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="STAGE.key=value, STAGE in eval_classifier, classifier, ddpm, sweep")
    parser.add_argument("--out", help="output dir (default outputs/demo/<time>_<id>)")
    parser.add_argument("--logger", default="wandb", choices=["wandb", "csv", "none"])
    args = parser.parse_args(argv)
    routed = route_overrides(args.overrides, [*STAGES, "sweep"])
    out = Path(args.out or f"outputs/demo/{datetime.now():%Y-%m-%d_%H-%M-%S}_{uuid.uuid4().hex[:6]}").resolve()
    console = Console()
    timings, checkpoints = {}, {}
    start = time.perf_counter()
    for stage, experiment in STAGES.items():
        console.rule(f"[bold]training {stage}")
        tic = time.perf_counter()
        cfg = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={out / stage}",
                                 f"logger={args.logger}", f"run_name=demo_{stage}", *DEMO_BUDGET[stage],
                                 *routed[stage]])
        checkpoints[stage] = train(cfg)["last_checkpoint"]
        timings[f"train_{stage}_s"] = time.perf_counter() - tic

    console.rule("[bold]guided sweep")
    tic = time.perf_counter()
    cfg = compose_config("sweep", [f"ddpm_checkpoint={checkpoints['ddpm']}", f"classifier_checkpoint={checkpoints['classifier']}",
                             f"eval_classifier_checkpoint={checkpoints['eval_classifier']}",
                             f"paths.output_dir={out / 'sweep'}", f"logger={args.logger}", "run_name=demo_sweep",
                             *DEMO_BUDGET["sweep"], *routed["sweep"]])
    result, paths = run_sweep(cfg)
    timings["sweep_s"] = time.perf_counter() - tic
    timings["total_s"] = time.perf_counter() - start
    (out / "demo_timings.json").write_text(json.dumps(timings, indent=2))

    print_table(result.rows, console=console)
    # whole lines (a log file has no width; Rich would fold a long path at 80 columns)
    console.print("stage timings (s): " + ", ".join(f"{k}={v:.0f}" for k, v in timings.items()), soft_wrap=True)
    console.print(f"quality_diversity.json: {paths['quality_diversity.json']}", soft_wrap=True)
    return {"result": result, "paths": paths, "timings": timings, "checkpoints": checkpoints}


def main(argv: list[str] | None = None) -> None:
    quiet_library_notices()
    with app_failures("guidelab-demo"):
        run_demo(argv)


if __name__ == "__main__":
    main()
