#!/usr/bin/env bash
# How much of the DDIM-50 vs DPM-Solver++-20 FID gap is sampling noise: every sampler at several seeds (each seed
# draws its own x_T, the same for every sampler), more samples per scale and every real training digit.
#   CKPTS=/work/ckpts/demo OUT=/tmp/dpm_seeds SEEDS="0 1 2" SAMPLES=2000 bash experiments/dpm_solver/seeds.sh
#   python experiments/dpm_solver/compare_seeds.py /tmp/dpm_seeds --out experiments/dpm_solver/seeds
set -euo pipefail
CKPTS=${CKPTS:-/work/ckpts/demo}
OUT=${OUT:-/tmp/dpm_seeds}
SEEDS=${SEEDS:-0 1 2}
SAMPLES=${SAMPLES:-2000}
NUM_REAL=${NUM_REAL:-1617}   # every digit of the train split (1797 less the 10% validation split)
mkdir -p "$OUT"
common=(ddpm_checkpoint=$CKPTS/ddpm/checkpoints/last.ckpt classifier_checkpoint=$CKPTS/classifier/checkpoints/last.ckpt
        eval_classifier_checkpoint=$CKPTS/eval_classifier/checkpoints/last.ckpt logger=csv device=${DEVICE:-cpu}
        guidance.samples_per_scale=$SAMPLES metrics.num_real=$NUM_REAL)
for seed in $SEEDS; do
  for run in "ddim 50" "dpm++2m 20" "dpm++2m-t 20" "ddim 20"; do
    set -- $run
    dir=$OUT/${1}_$2_seed$seed
    [ -f "$dir/quality_diversity.json" ] && continue   # resumable: finished runs are kept
    python -m guidelab.apps.sweep "${common[@]}" guidance.sampler=$1 guidance.steps=$2 seed=$seed \
      paths.output_dir=$dir > $OUT/${1}_$2_seed$seed.log 2>&1
  done
done
