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
from guidelab.evaluation.report import _jsonable, print_table

HERE = Path(__file__).resolve().parent
METHODS = ["classifier", "classifier_mean", "interval", "cgpp", "projected", "clean_x0", "clean_x0_dps",
           "autoguidance", "autoguidance_cg"]
SCALES = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="guidelab-sweep overrides, e.g. guidance.samples_per_scale=100")
    parser.add_argument("--demo", required=True, help="dir with {ddpm,classifier,eval_classifier}/checkpoints/last.ckpt")
    parser.add_argument("--clean-classifier", required=True, help="a clean classifier that is NOT the eval classifier")
    parser.add_argument("--weak-ddpm", required=True, help="a weaker DDPM of the same schedule")
    parser.add_argument("--cfg-ddpm", help="a task=cfg_ddpm checkpoint: adds classifier-free guidance")
    parser.add_argument("--out", default="/tmp/guidance_zoo", help="sweep run dir")
    parser.add_argument("--results", default=str(HERE), help="where guidance_zoo.json / .png go")
    args = parser.parse_args(argv)
    demo = Path(args.demo)
    methods = METHODS + (["cfg"] if args.cfg_ddpm else [])
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
    (results / "guidance_zoo.json").write_text(json.dumps(_jsonable(doc), indent=2, allow_nan=False))
    shutil.copy(paths["quality_diversity.png"], results / "guidance_zoo.png")
    print(f"wrote {results / 'guidance_zoo.json'} and {results / 'guidance_zoo.png'}")
    return doc


if __name__ == "__main__":
    main()
