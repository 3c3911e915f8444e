"""Classifier guidance (CG) vs classifier-free guidance (CFG) on the embedded digits.

Trains (or takes) the unconditional DDPM + noisy classifier for CG, the class-conditional DDPM for CFG
and one clean evaluation classifier; sweeps both methods with the same evaluation classifier, sampler
and x_T; writes cg_vs_cfg.json (rows and cost per sample per method) and cg_vs_cfg.png.

    .venv/bin/python experiments/cg_vs_cfg/run.py
    .venv/bin/python experiments/cg_vs_cfg/run.py --ddpm /tmp/demo4/ddpm/checkpoints/last.ckpt \\
        --classifier /tmp/demo4/classifier/checkpoints/last.ckpt \\
        --eval-classifier /tmp/demo4/eval_classifier/checkpoints/last.ckpt
    .venv/bin/python experiments/cg_vs_cfg/run.py cfg_ddpm.trainer.max_steps=100 sweep.guidance.samples_per_scale=50

Overrides are STAGE.key=value, STAGE one of the training stages or `sweep` (applied to both sweeps).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from guidelab.apps.config import compose_config, route_overrides  # noqa: E402
from guidelab.apps.sweep import run_sweep  # noqa: E402
from guidelab.apps.train import train  # noqa: E402
from guidelab.evaluation.report import jsonable, print_table  # noqa: E402
from guidelab.modules import load_module  # noqa: E402

HERE = Path(__file__).resolve().parent
STAGES = {"eval_classifier": "digits_eval_classifier", "classifier": "digits_classifier",
          "ddpm": "digits_ddpm", "cfg_ddpm": "digits_cfg_ddpm"}
CG_SCALES = [-1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
CFG_SCALES = [0.0, 0.5, 1.0, 2.0, 3.0, 5.0]


def num_parameters(path) -> int:
    return sum(p.numel() for p in load_module(path).parameters())


def cost_per_sample(method: str, result, checkpoints: dict) -> dict:
    """Network passes per sample (from the sampler's structure) and measured sampling wall time."""
    steps = int(result.settings["steps"])
    n = result.settings["samples_per_scale"] * len(result.rows)
    if method == "cg":
        passes = {"eps_forward": steps, "classifier_forward": steps, "classifier_backward": steps}
        params = {"eps_model": num_parameters(checkpoints["ddpm"]), "classifier": num_parameters(checkpoints["classifier"])}
    else:  # the conditional and unconditional passes run as one forward on a doubled batch
        passes = {"eps_forward": 2 * steps, "classifier_forward": 0, "classifier_backward": 0}
        params = {"eps_model": num_parameters(checkpoints["cfg_ddpm"]), "classifier": 0}
    sampling_s = result.timings["sampling_s"]
    return {"sampling_steps": steps, "passes_per_sample": passes, "network_passes_per_sample": sum(passes.values()),
            "parameters": params, "num_samples": n, "sampling_s": sampling_s,
            "wall_ms_per_sample": 1000 * sampling_s / n, "samples_per_s": n / sampling_s}


def plot(methods: dict, path: Path) -> None:
    fig, (ax_fid, ax_pr) = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"cg": ("tab:blue", "o-", "classifier guidance"), "cfg": ("tab:red", "s-", "classifier-free guidance")}
    for name, method in methods.items():
        color, fmt, label = styles[name]
        rows = method["rows"]
        for ax, (x_key, y_key) in ((ax_fid, ("accuracy", "fid")), (ax_pr, ("recall", "precision"))):
            xs, ys = [r[x_key] for r in rows], [r[y_key] for r in rows]
            ax.plot(xs, ys, fmt, color=color, label=label)
            for x, y, r in zip(xs, ys, rows):
                ax.annotate(f"{r['scale']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color=color)
    ax_fid.set(title="FID vs accuracy (labels: guidance scale)", xlabel="accuracy w.r.t. target (eval classifier)",
               ylabel="FID (eval-classifier features), lower is better")
    ax_pr.set(title="precision vs recall", xlabel="recall (diversity)", ylabel="precision (quality)")
    for ax in (ax_fid, ax_pr):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Digits: classifier guidance vs classifier-free guidance, same eval classifier and sampler")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="STAGE.key=value")
    for stage in STAGES:
        parser.add_argument(f"--{stage.replace('_', '-')}", metavar="CKPT", help=f"use this {stage} checkpoint instead of training one")
    parser.add_argument("--out", help="run dir for checkpoints and sweeps (default outputs/cg_vs_cfg/<time>)")
    parser.add_argument("--results", default=str(HERE), help="where cg_vs_cfg.json and .png go (default: this folder)")
    parser.add_argument("--logger", default="csv", choices=["wandb", "csv", "none"])
    args = parser.parse_args(argv)
    routed = route_overrides(args.overrides, [*STAGES, "sweep"])
    out = Path(args.out or f"outputs/cg_vs_cfg/{datetime.now():%Y-%m-%d_%H-%M-%S}").resolve()
    results = Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)

    timings, checkpoints = {}, {}
    for stage, experiment in STAGES.items():
        given = getattr(args, stage)
        if given:
            checkpoints[stage] = str(Path(given).resolve())
            continue
        tic = time.perf_counter()
        cfg = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={out / stage}",
                                       f"logger={args.logger}", f"run_name=cg_vs_cfg_{stage}", *routed[stage]])
        checkpoints[stage] = train(cfg)["last_checkpoint"]
        timings[f"train_{stage}_s"] = time.perf_counter() - tic

    methods = {}
    for method, ddpm, classifier, scales in (("cg", "ddpm", "classifier", CG_SCALES), ("cfg", "cfg_ddpm", None, CFG_SCALES)):
        tic = time.perf_counter()
        overrides = [f"ddpm_checkpoint={checkpoints[ddpm]}", f"eval_classifier_checkpoint={checkpoints['eval_classifier']}",
                     f"guidance.scales=[{','.join(map(str, scales))}]", f"paths.output_dir={out / f'sweep_{method}'}",
                     f"logger={args.logger}", f"run_name=cg_vs_cfg_sweep_{method}", *routed["sweep"]]
        if classifier:
            overrides.append(f"classifier_checkpoint={checkpoints[classifier]}")
        result, _ = run_sweep(compose_config("sweep", overrides))
        timings[f"sweep_{method}_s"] = time.perf_counter() - tic
        print_table(result.rows)
        methods[method] = {"rows": result.rows, "cost": cost_per_sample(method, result, checkpoints),
                           "settings": result.settings}

    doc = {"methods": methods, "checkpoints": checkpoints, "stage_timings_s": timings, "run_dir": str(out)}
    (results / "cg_vs_cfg.json").write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False))
    plot(methods, results / "cg_vs_cfg.png")
    for name, method in methods.items():
        cost = method["cost"]
        print(f"{name}: {cost['network_passes_per_sample']} network passes/sample {cost['passes_per_sample']}, "
              f"{cost['wall_ms_per_sample']:.1f} ms/sample")
    print(f"wrote {results / 'cg_vs_cfg.json'} and {results / 'cg_vs_cfg.png'}")
    return doc


if __name__ == "__main__":
    main()
