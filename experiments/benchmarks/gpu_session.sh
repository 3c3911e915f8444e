#!/usr/bin/env bash
# Prepared GPU calls for a session with the device tool (see README.md here):
#   here, once: bash ../shared/tools/gpu-wheels.sh diffusers importlib_metadata      (wheels into .whl/)
#   there (project root, carrying .whl):  bash experiments/benchmarks/gpu_session.sh [BUDGET_S] [PARTS]
# PARTS (default "sweep train tests"; about 6-7 minutes on an H200): any of
#   sweep    guided_sweep.py: textbook loop against the sweep, step cost guided/unguided     (~2 min)
#   train    train_throughput.py: diffusers eager, ours through guidelab-train (eager, fast)   (~3 min)
#   kernels  train_throughput.py: diffusers and ours compiled in the plain loop, GPU time by kernel kind
#            (what separates the two compiled nets; ~3 min)
#   tests    pytest -m gpu with whatever time is left
# Two calls fit a 15-minute session: "sweep train tests", then "kernels" (or whichever part is open).
set -u
budget=${1:-400}; parts=${2:-sweep train tests}; start=$(date +%s)
has() { case " $parts " in *" $1 "*) return 0;; *) return 1;; esac; }
left() { echo $(( budget - ($(date +%s) - start) )); }
out=${OUT:-/tmp/gpu}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, pytorch_lightning as pl, diffusers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', pl.__version__, 'diffusers', diffusers.__version__)"
} 2>&1 | tee "$out/env.log"
if has sweep; then
t0=$(date +%s); timeout 190 python3 experiments/benchmarks/guided_sweep.py --out "$out/sweep.json" > "$out/sweep.log" 2>&1
echo "== sweep rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$out/env.log"; grep -v Warning "$out/sweep.log" | tail -14
fi
if has train; then
t0=$(date +%s); timeout 180 python3 experiments/benchmarks/train_throughput.py --only diffusers_eager ours_train_eager ours_train_fast \
  --json "$out/train.json" > "$out/train.log" 2>&1
echo "== train rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$out/env.log"; grep '^{"figure\|^{"param\|/ diffusers' "$out/train.log"
fi
if has kernels; then
t0=$(date +%s); timeout 240 python3 experiments/benchmarks/train_throughput.py --only diffusers_compiled ours_plain_compiled \
  --kernels 5 --json "$out/kernels.json" > "$out/kernels.log" 2>&1
echo "== kernels rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$out/env.log"
grep '^{"figure\|GPU ms per step\|^    ' "$out/kernels.log" | head -40
fi
rest=$(( $(left) - 10 ))
if has tests && [ "$rest" -gt 30 ]; then
  t0=$(date +%s); timeout "$rest" python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py > "$out/pytest-gpu.log" 2>&1
  echo "== pytest-gpu rc=$? in $(( $(date +%s) - t0 )) s (limit $rest)" | tee -a "$out/env.log"; tail -3 "$out/pytest-gpu.log"
fi
