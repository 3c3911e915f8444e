"""Guidance zoo on digits: every guidance method on one DDPM, the same x_T, one plot with its cost.

One `guidelab-sweep` call with several methods (conf/method/). Needs the demo checkpoints (DDPM, noisy
classifier, evaluation classifier), a second clean classifier (for the clean-x0 methods; never the
evaluation classifier) and a weaker DDPM of the same schedule (for autoguidance); a task=cfg_ddpm
checkpoint adds classifier-free guidance.

    .venv/bin/python experiments/guidance_zoo/run.py --demo /work/ckpts/demo \\
        --clean-classifier CLEAN.ckpt --weak-ddpm WEAK.ckpt [--cfg-ddpm CFG.ckpt] [sweep overrides ...]

Writes guidance_zoo.json (rows with NFE and seconds per sample per method) and guidance_zoo.png here.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from guidelab.apps.config import compose_config
from guidelab.apps.sweep import run_sweep
from guidelab.evaluation.plots import plot_quality_diversity
from guidelab.evaluation.report import jsonable, print_table

HERE = Path(__file__).resolve().parent
METHODS = ["classifier", "classifier_mean", "interval", "cgpp", "projected", "clean_x0", "clean_x0_dps",
           "autoguidance", "autoguidance_cg"]
SCALES = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]


def merge(old: dict, new: dict) -> dict:
    """The old document with the new run's methods added; refuses runs whose sampling settings differ."""
    shared = ("scales", "samples_per_scale", "sampler", "steps", "eta", "clip_denoised", "seed")
    differ = [key for key in shared if old["settings"][key] != new["settings"][key]]
    if differ:
        raise SystemExit(f"cannot merge: settings {differ} differ from guidance_zoo.json")
    added = {row["method"] for row in new["rows"]}
    return {**old, "rows": [r for r in old["rows"] if r["method"] not in added] + new["rows"],
            "settings": {**old["settings"], "methods": {**old["settings"]["methods"], **new["settings"]["methods"]}},
            "trajectory": {**old["trajectory"], **new["trajectory"]},
            "merged_runs": old.get("merged_runs", [old["command_overrides"]]) + [new["command_overrides"]]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="guidelab-sweep overrides, e.g. guidance.samples_per_scale=100")
    parser.add_argument("--demo", required=True, help="dir with {ddpm,classifier,eval_classifier}/checkpoints/last.ckpt")
    parser.add_argument("--clean-classifier", required=True, help="a clean classifier that is NOT the eval classifier")
    parser.add_argument("--weak-ddpm", required=True, help="a weaker DDPM of the same schedule")
    parser.add_argument("--cfg-ddpm", help="a task=cfg_ddpm checkpoint: adds classifier-free guidance")
    parser.add_argument("--out", default="/tmp/guidance_zoo", help="sweep run dir")
    parser.add_argument("--results", default=str(HERE), help="where guidance_zoo.json / .png go")
    parser.add_argument("--methods", help="comma-separated subset of the methods to run (default: all)")
    parser.add_argument("--merge", action="store_true",
                        help="add these methods' rows to the existing guidance_zoo.json (same settings, same x_T) "
                             "and redraw the plot, instead of replacing it")
    args = parser.parse_args(argv)
    demo = Path(args.demo)
    methods = args.methods.split(",") if args.methods else METHODS + (["cfg"] if args.cfg_ddpm else [])
    overrides = [
        f"ddpm_checkpoint={demo / 'ddpm/checkpoints/last.ckpt'}",
        f"classifier_checkpoint={demo / 'classifier/checkpoints/last.ckpt'}",
        f"eval_classifier_checkpoint={demo / 'eval_classifier/checkpoints/last.ckpt'}",
        f"clean_classifier_checkpoint={args.clean_classifier}", f"weak_ddpm_checkpoint={args.weak_ddpm}",
        f"method=[{','.join(methods)}]", f"guidance.scales=[{','.join(map(str, SCALES))}]",
        f"paths.output_dir={args.out}", "logger=csv", "run_name=guidance_zoo", *args.overrides]
    if args.cfg_ddpm:
        overrides.append(f"cfg_ddpm_checkpoint={args.cfg_ddpm}")
    result, paths = run_sweep(compose_config("sweep", overrides))
    print_table(result.rows)
    results = Path(args.results)
    doc = {**result.to_json(), "command_overrides": overrides}
    if args.merge:
        doc = merge(json.loads((results / "guidance_zoo.json").read_text()), doc)
        plot_quality_diversity(doc["rows"], results / "guidance_zoo.png")
    else:
        shutil.copy(paths["quality_diversity.png"], results / "guidance_zoo.png")
    (results / "guidance_zoo.json").write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False))
    print(f"wrote {results / 'guidance_zoo.json'} and {results / 'guidance_zoo.png'}")
    return doc


if __name__ == "__main__":
    main()
