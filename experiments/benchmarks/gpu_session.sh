#!/usr/bin/env bash
# Prepared GPU calls for a session with the device tool (see README.md here):
#   here, once: bash ../shared/tools/gpu-wheels.sh diffusers importlib_metadata      (wheels into .whl/)
#   there (project root, carrying .whl):  bash experiments/benchmarks/gpu_session.sh [BUDGET_S] [PARTS]
# PARTS (default "sweep train tests"): any of these, run in the order given
#   sweep     guided_sweep.py: textbook loop against the sweep at batch 512 and at the shipped batch, with CUDA
#             graphs, with the classifier on a second stream, both DPM-Solver++ grids, step costs (~5 min)
#   candidates  guided_sweep.py --variants default graphs streams: the textbook loop, the default compiled sweep and
#             the two candidates for the 1.3 step ratio, each row followed by its step cost (~5 min)
#   recompute guided_sweep.py --variants default recompute: the compiled sweep and its step cost, then the same with
#             the classifier's gradient compiled with FastPath.recompute (inductor_codegen.py counts 49% fewer bytes
#             in its backward); issue 12's 1.3 step ratio (~5 min)
#   trainrecompute  train_throughput.py: ours through guidelab-train on the default fast path, then the same with
#             fast_nets.RECOMPUTE_OPTIONS for inductor (inductor_codegen.py counts 41% fewer bytes in the backward; ~5 min)
#   shipped   guided_sweep.py --variants shipped: the compiled sweep at the shipped batch (1,024) and its step cost
#             there, guided against unguided; issue 12's 1.3 step ratio has been measured at batch 512 only (~4 min)
#   train     train_throughput.py: diffusers eager and compiled, ours through guidelab-train on the default fast
#             path (compile auto: CUDA graphs on one GPU) and compiled without graphs (compile=default): both
#             targets of issue 11 side by side in one process, as the issue asks, ours second so that a cut run
#             keeps it (~6 min)
#   host      train_throughput.py: ours and diffusers compiled in the plain loop with --kernels 3: GPU busy share of
#             the step, the host's costliest ops, the allocator's cudaMalloc/cudaFree and the sync points in the
#             step, and the rate again after the profile (what keeps our GPU idle; ~4 min)
#   compiled  train_throughput.py: diffusers and ours compiled in the plain loop, with and without channels_last,
#             and GPU ms per step by kernel kind (what separates the two compiled nets; ~7 min, channels_last pair first)
#   layout    train_throughput.py: ours through guidelab-train compiled without channels_last (~2 min)
#   ddp       train_throughput.py: ours through guidelab-train compiled without graphs, on one device alone and under
#             trainer=ddp (where compile auto means no graphs): DDP's own overhead on a GPU (issue 11, ~4 min)
#   ddpvariants  train_throughput.py: what might take back DDP's overhead on one GPU (the seventeenth session
#             measured 0.72x of the same compile mode without DDP): plain trainer=ddp as the baseline first (a cut
#             run keeps it), then CUDA graphs under DDP, DDP built on the current stream, and the net compiled
#             without DDPOptimizer's splits (~8 min; each row compiles afresh)
#   combo     train_throughput.py: ours compiled (plain loop and guidelab-train) with inductor's combo kernels,
#             31% fewer launches per step by inductor_codegen.py; compare with the "train" and "compiled" rows
#             of the same call (~3 min)
#   compiles  sweep_compiles.py --preset cifar10: graphs compiled and wall time of a compiled sweep, scales dealt and
#             padded against the old chunks, with the CIFAR-10 nets on the GPU (~6 min, not yet run on a GPU)
#   tests     pytest -m gpu (-v: the log names each test as it starts; --durations): what the budget leaves when
#             last, at most 6 minutes otherwise. On a fresh machine each test compiles its nets: the sixteenth
#             session's 428 s ran the first three of ten
#   traintests / sampletests  the GPU tests in two groups that each fit a call: training (the CIFAR-10 preset,
#             the training sync check, the callback that trains a classifier with graphs, sampling with and without
#             graphs of its own) and sampling (the sampling sync check, the graphs and second-stream sampling paths)
#   callbackgraphs  a GPU test not yet run on a GPU: the callback sampling with fast_path=graphs beside the
#             training step's graphs (~80 s on a fresh machine)
#   recomputetests  the GPU tests of FastPath.recompute, not yet run on a GPU: it samples what the same mode without
#             it samples, with and without graphs (~2 min on a fresh machine)
# A 15-minute session fits two calls of about 5-6 minutes, started one right after the other (the machine stays warm
# 30 s): the plan in README.md ("Prepared for the next GPU session"). Each part's timeout is capped by what is left of
# BUDGET_S (a part with nothing left is skipped), and `timeout -k 10` kills a part that outlives SIGTERM (a train part
# once ran over two minutes past its limit).
set -u
budget=${1:-400}; parts=${2:-sweep train tests}; start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
cap() { local l=$(( $(left) - 5 )); echo $(( $1 < l ? $1 : l )); }  # a part's limit, within the budget
out=${OUT:-/tmp/gpu}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
# TEARDOWN_CUPTI=1: Kineto detaches CUPTI when a profile ends; otherwise every row after a --kernels profile runs
# with CUPTI attached (pytorch/pytorch#144455), as the eleventh session's rows 2-4 did
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled TEARDOWN_CUPTI=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, pytorch_lightning as pl, diffusers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', pl.__version__, 'diffusers', diffusers.__version__)"
} 2>&1 | tee "$out/env.log"
part() {  # part NAME LIMIT_S SCRIPT [ARGS]: a benchmark of this folder, its output in $out/NAME.log
  local name=$1 limit=$(cap "$2") script=$3 t0=$(date +%s); shift 3
  if [ "$limit" -le 0 ]; then echo "== $name skipped: the budget is spent" | tee -a "$out/env.log"; return; fi
  timeout -k 10 "$limit" python3 "experiments/benchmarks/$script" "$@" > "$out/$name.log" 2>&1
  echo "== $name rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$out/env.log"
}
run_part() {  # one part of PARTS, by name
  case $1 in
    sweep) part sweep 330 guided_sweep.py --out "$out/sweep.json"; grep -v Warning "$out/sweep.log" | tail -24 ;;
    candidates)
      part candidates 330 guided_sweep.py --variants default graphs streams --out "$out/candidates.json"
      grep -v Warning "$out/candidates.log" | tail -24 ;;
    recompute)
      part recompute 330 guided_sweep.py --variants default recompute --out "$out/recompute.json"
      grep -v Warning "$out/recompute.log" | tail -24 ;;
    shipped)
      part shipped 270 guided_sweep.py --variants shipped --out "$out/shipped.json"
      grep -v Warning "$out/shipped.log" | tail -24 ;;
    train)
      part train 470 train_throughput.py --json "$out/train.json" \
        --only diffusers_eager ours_train_fast diffusers_compiled ours_train_fast_nographs
      grep '^{"figure\|^{"param\|/ diffusers\|Error' "$out/train.log" | tail -20
      grep -A 5 '^figure ' "$out/train.log" ;;  # images/s, wall and issue ms per step, one row per line
    host)
      part host 270 train_throughput.py --kernels 3 --json "$out/host.json" --only ours_plain_compiled diffusers_compiled
      grep '^{"figure' "$out/host.log"  # whole: the allocator's counts, sync points, the rate after the profile
      grep 'GPU ms per step\|GPU busy\|^    ' "$out/host.log" | cut -c1-130 | head -90 ;;
    trainrecompute)
      part trainrecompute 330 train_throughput.py --only ours_train_fast ours_train_fast_recompute \
        --json "$out/trainrecompute.json"
      grep '^{"figure\|recompute /' "$out/trainrecompute.log" ;;
    layout)
      part layout 150 train_throughput.py --only ours_train_fast_nchw --json "$out/layout.json"
      grep '^{"figure' "$out/layout.log" ;;
    ddp)
      part ddp 300 train_throughput.py --only ours_train_fast_nographs ours_train_fast_ddp1 --json "$out/ddp.json"
      grep '^{"figure' "$out/ddp.log" ;;
    ddpvariants)
      part ddpvariants 540 train_throughput.py --json "$out/ddpvariants.json" --only ours_train_fast_ddp1 \
        ours_train_fast_ddp1_graphs ours_train_fast_ddp1_same_stream ours_train_fast_ddp1_whole_graph
      grep '^{"figure\|Error\|AccumulateGrad' "$out/ddpvariants.log" | cut -c1-400
      grep -A 6 '^figure ' "$out/ddpvariants.log" ;;
    combo)
      part combo 200 train_throughput.py --inductor combo_kernels=True --only ours_plain_compiled ours_train_fast \
        --json "$out/combo.json"
      grep '^{"figure' "$out/combo.log" ;;
    compiled)
      part compiled 470 train_throughput.py --kernels 3 --json "$out/compiled.json" \
        --only diffusers_compiled ours_plain_compiled diffusers_compiled_nchw ours_plain_compiled_nchw
      grep '^{"figure' "$out/compiled.log"
      grep 'GPU ms per step\|^    ' "$out/compiled.log" | cut -c1-130 | head -72 ;;
    compiles)
      part compiles 420 sweep_compiles.py --preset cifar10 --device cuda --out "$out/compiles.json"
      grep -v Warning "$out/compiles.log" | tail -12 ;;
    tests|traintests|sampletests|callbackgraphs|recomputetests)  # what the budget leaves, at most 360 s when parts follow
      local limit=$(cap 360) t0=$(date +%s) select=()
      [ "$1" = "$last" ] && limit=$(( $(left) - 10 ))
      if [ "$limit" -le 30 ]; then echo "== $1 skipped: the budget is spent" | tee -a "$out/env.log"; return; fi
      [ "$1" = traintests ] && select=(-k "cifar10_preset or training_steps_do_not_sync or callback_on_gpu")
      [ "$1" = sampletests ] && select=(-k "sampling_steps_do_not_sync or graphs_path_samples or second_stream or recompute_path")
      [ "$1" = callbackgraphs ] && select=(-k "callback_on_gpu and graphs")
      [ "$1" = recomputetests ] && select=(-k "recompute_path")
      timeout -k 10 "$limit" python3 -m pytest -v --durations=0 -m gpu -p no:cacheprovider "${select[@]}" \
        tests/test_gpu.py > "$out/$1.log" 2>&1
      echo "== $1 rc=$? in $(( $(date +%s) - t0 )) s (limit $limit)" | tee -a "$out/env.log"
      grep 'PASSED\|FAILED\|ERROR\|s call\|passed\|failed' "$out/$1.log" | cut -c1-160 | tail -30 ;;
    *) echo "== $1: no such part (sweep candidates recompute shipped train trainrecompute host layout ddp ddpvariants combo compiled compiles tests traintests sampletests callbackgraphs recomputetests)" | tee -a "$out/env.log" ;;
  esac
}
last=${parts##* }
for name in $parts; do run_part "$name"; done
