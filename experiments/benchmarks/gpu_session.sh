#!/usr/bin/env bash
# Prepared GPU calls for a session with the device tool (see README.md here):
#   here, once: bash ../shared/tools/gpu-wheels.sh diffusers importlib_metadata      (wheels into .whl/)
#   there (project root, carrying .whl):  bash experiments/benchmarks/gpu_session.sh [BUDGET_S] [PARTS]
# PARTS (default "sweep train tests"): any of
#   sweep     guided_sweep.py: textbook loop against the sweep (both DPM-Solver++ grids), step cost guided/unguided (~2.5 min)
#   train     train_throughput.py: diffusers eager, ours through guidelab-train eager, fast, fast without channels_last (~4 min)
#   compiled  train_throughput.py: diffusers and ours compiled in the plain loop, with and without channels_last,
#             and GPU ms per step by kernel kind (what separates the two compiled nets; ~4-5 min)
#   tests     pytest -m gpu with whatever time is left
# A 15-minute session fits two calls: "compiled sweep" (the open questions first), then "train tests"; set
# the default layout from the compiled rows before the second call if they say so (task.module.channels_last).
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
t0=$(date +%s); timeout 230 python3 experiments/benchmarks/guided_sweep.py --out "$out/sweep.json" > "$out/sweep.log" 2>&1
echo "== sweep rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$out/env.log"; grep -v Warning "$out/sweep.log" | tail -14
fi
if has train; then
t0=$(date +%s); timeout 270 python3 experiments/benchmarks/train_throughput.py --only diffusers_eager ours_train_eager ours_train_fast ours_train_fast_nchw \
  --json "$out/train.json" > "$out/train.log" 2>&1
echo "== train rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$out/env.log"; grep '^{"figure\|^{"param\|/ diffusers' "$out/train.log"
fi
if has compiled; then
t0=$(date +%s); timeout 300 python3 experiments/benchmarks/train_throughput.py --kernels 3 --json "$out/compiled.json" \
  --only diffusers_compiled diffusers_compiled_nchw ours_plain_compiled ours_plain_compiled_nchw > "$out/compiled.log" 2>&1
echo "== compiled rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$out/env.log"
grep '^{"figure\|GPU ms per step\|^    ' "$out/compiled.log" | head -72
fi
rest=$(( $(left) - 10 ))
if has tests && [ "$rest" -gt 30 ]; then
  t0=$(date +%s); timeout "$rest" python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py > "$out/pytest-gpu.log" 2>&1
  echo "== pytest-gpu rc=$? in $(( $(date +%s) - t0 )) s (limit $rest)" | tee -a "$out/env.log"; tail -3 "$out/pytest-gpu.log"
fi
