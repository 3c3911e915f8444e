"""Table and plot of seeds.sh: each sampler's FID and accuracy per scale as mean and spread over seeds, and the
paired FID ratio against DDIM at 50 steps (same seed = same x_T), so the 10% FID criterion of issue 12 is read
against the seed-to-seed spread of DDIM-50 itself.

    python experiments/dpm_solver/compare_seeds.py /tmp/dpm_seeds --out experiments/dpm_solver/seeds
    python experiments/dpm_solver/compare_seeds.py experiments/dpm_solver/seeds_runs     # the recorded runs
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

REFERENCE = "ddim_50"
RUN = re.compile(r"^(?P<sampler>.+_\d+)_seed(?P<seed>\d+)$")


def load(root: Path) -> dict:
    """{sampler: {seed: {scale: row}}} from every <sampler>_<steps>_seed<k>/quality_diversity.json under root
    (seeds.sh's run dirs), or every <sampler>_<steps>_seed<k>.json (the copies kept in seeds_runs/)."""
    runs: dict = defaultdict(dict)
    found = [(path, path.parent.name) for path in root.glob("*/quality_diversity.json")]
    found += [(path, path.stem) for path in root.glob("*.json")]
    for path, name in sorted(found):
        match = RUN.match(name)
        if match is None:
            continue
        rows = json.loads(path.read_text())["rows"]
        runs[match["sampler"]][int(match["seed"])] = {row["scale"]: row for row in rows}
    if REFERENCE not in runs:
        raise SystemExit(f"no {REFERENCE}_seed<k>/quality_diversity.json under {root}: run seeds.sh first")
    return runs


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarise(runs: dict) -> dict:
    """Per sampler and scale: FID/accuracy mean and std over seeds, the paired FID ratio to DDIM-50, and the
    accuracy gap to DDIM-50 (both over the seeds both have)."""
    reference = runs[REFERENCE]
    out: dict = {}
    for sampler, seeds in runs.items():
        scales = sorted(next(iter(seeds.values())))
        table = {}
        for scale in scales:
            fid = [seeds[s][scale]["fid"] for s in seeds]
            acc = [seeds[s][scale]["accuracy"] for s in seeds]
            paired = [s for s in seeds if s in reference]
            ratio = [seeds[s][scale]["fid"] / reference[s][scale]["fid"] for s in paired]
            acc_gap = [seeds[s][scale]["accuracy"] - reference[s][scale]["accuracy"] for s in paired]
            table[scale] = {"fid": spread(fid), "accuracy": spread(acc), "fid_ratio": spread(ratio),
                            "accuracy_gap": statistics.fmean(acc_gap), "seeds": len(fid)}
        out[sampler] = table
    return out


def report(summary: dict) -> str:
    ref = summary[REFERENCE]
    lines = ["| sampler | w | FID mean ± sd | FID / DDIM-50 (paired, mean ± sd) | accuracy | acc - DDIM-50 |",
             "|---|---:|---:|---:|---:|---:|"]
    for sampler, table in summary.items():
        for scale, row in table.items():
            (fm, fs), (am, _), (rm, rs) = row["fid"], row["accuracy"], row["fid_ratio"]
            lines.append(f"| {sampler} | {scale:g} | {fm:.3f} ± {fs:.3f} | {rm:.3f} ± {rs:.3f} | {am:.3f} | "
                         f"{row['accuracy_gap']:+.3f} |")
    noise = [ref[s]["fid"][1] / ref[s]["fid"][0] for s in ref]
    lines.append("")
    lines.append("DDIM-50's own seed-to-seed FID spread (sd / mean) per scale: "
                 + ", ".join(f"w={s:g} {n:.1%}" for s, n in zip(ref, noise)))
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    """FID per scale (mean ± sd over seeds), then each sampler against DDIM-50: the paired FID ratio in the
    issue's ±10% band and the accuracy gap in its ±0.02 band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fid, ax_ratio, ax_acc) = plt.subplots(1, 3, figsize=(15, 4))
    for number, (sampler, table) in enumerate(summary.items()):
        scales, color = list(table), f"C{number}"  # one colour per sampler in every panel
        ax_fid.errorbar(scales, [table[s]["fid"][0] for s in scales], yerr=[table[s]["fid"][1] for s in scales],
                        marker="o", capsize=3, label=sampler, color=color)
        if sampler == REFERENCE:
            continue
        ax_ratio.errorbar(scales, [table[s]["fid_ratio"][0] for s in scales],
                          yerr=[table[s]["fid_ratio"][1] for s in scales], marker="o", capsize=3, label=sampler,
                          color=color)
        ax_acc.plot(scales, [table[s]["accuracy_gap"] for s in scales], marker="o", label=sampler, color=color)
    ax_ratio.axhspan(0.9, 1.1, color="0.9", zorder=0, label="±10%")
    ax_acc.axhspan(-0.02, 0.02, color="0.9", zorder=0, label="±0.02")
    ax_fid.set(xlabel="guidance scale w", ylabel="FID (eval-classifier features)", title="mean ± sd over seeds")
    ax_ratio.set(xlabel="guidance scale w", ylabel=f"FID / {REFERENCE} FID (same seed)", title="paired FID ratio")
    ax_acc.set(xlabel="guidance scale w", ylabel=f"accuracy - {REFERENCE} accuracy", title="accuracy gap")
    for ax in (ax_fid, ax_ratio, ax_acc):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="OUT of seeds.sh")
    parser.add_argument("--out", type=Path, help="write <out>.json, <out>.md and <out>.png")
    args = parser.parse_args(argv)
    summary = summarise(load(args.root))
    text = report(summary)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(
            {s: {str(k): v for k, v in t.items()} for s, t in summary.items()}, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")
        plot(summary, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
