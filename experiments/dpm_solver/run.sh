#!/usr/bin/env bash
# DDIM at 50 steps against DPM-Solver++(2M) at 20 on the digits checkpoints of `make demo`.
#   CKPTS=/work/ckpts/demo OUT=/tmp/dpm_solver bash experiments/dpm_solver/run.sh
set -euo pipefail
CKPTS=${CKPTS:-/work/ckpts/demo}
OUT=${OUT:-/tmp/dpm_solver}
common=(ddpm_checkpoint=$CKPTS/ddpm.ckpt classifier_checkpoint=$CKPTS/classifier.ckpt
        eval_classifier_checkpoint=$CKPTS/eval_classifier.ckpt logger=csv device=cpu)
for run in "ddim 50" "dpm++2m 20" "ddim 20"; do
  set -- $run
  python -m guidelab.apps.sweep "${common[@]}" guidance.sampler=$1 guidance.steps=$2 \
    paths.output_dir=$OUT/${1}_$2 2>&1 | tail -15
done
