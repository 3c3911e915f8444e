#!/usr/bin/env bash
# DDIM at 50 steps against DPM-Solver++(2M) at 20 on both grids (and DDIM at 20) on the digits checkpoints of `make demo`,
# the sweeps in parallel (same x_T per (scale, target): the sweep's seed).
#   CKPTS=/work/ckpts/demo OUT=/tmp/dpm_solver [DEVICE=cuda] bash experiments/dpm_solver/run.sh
set -euo pipefail
CKPTS=${CKPTS:-/work/ckpts/demo}
OUT=${OUT:-/tmp/dpm_solver}
mkdir -p "$OUT"
common=(ddpm_checkpoint=$CKPTS/ddpm/checkpoints/last.ckpt classifier_checkpoint=$CKPTS/classifier/checkpoints/last.ckpt
        eval_classifier_checkpoint=$CKPTS/eval_classifier/checkpoints/last.ckpt logger=csv device=${DEVICE:-cpu})
for run in "ddim 50" "dpm++2m 20" "dpm++2m-t 20" "ddim 20"; do  # seed=0 (sweep.yaml) for all
  set -- $run
  OMP_NUM_THREADS=1 python -m guidelab.apps.sweep "${common[@]}" guidance.sampler=$1 guidance.steps=$2 \
    paths.output_dir=$OUT/${1}_$2 > $OUT/${1}_$2.log 2>&1 &
done
wait
tail -n 14 $OUT/*.log
