#!/usr/bin/env bash
# Every GPU check in one call, for the device machine (torch 2.11 + CUDA + triton there), in this order, most
# important first; each step starts only if it fits in what is left of BUDGET seconds (default 540, under the
# device tool's 600 s a command). Everything printed also goes to $OUT/gpu_check.log. STEPS picks among the
# step names (default: all eight):
#   tests   GPU tests: CUDA graphs of the exact forward, of the fused forward (torch ops and Triton kernels) and
#           of the compiled fused forward, each streamed against the CPU runner; no host sync in a replay; the
#           runner's host levers (copies in the graphs, replay warm, host work during the forward);
#   wake    tools/gpu_wake.py: the CUDA runner's host time a call (pack, launch, sync) against the GPU's events,
#           back to back and at 50 Hz, with and without a tiny kernel queued before each call, and with the
#           copies in and out captured in the graph (a second runner with model.graph_copies);
#   levers  tools/host_overhead.py --device cuda: the engine's host levers on the real CUDA runner in
#           alternating rounds (LEVER_S seconds a phase, default 10; LEVER_ROUNDS rounds, default 3): the
#           default loop; the copies in the graphs (model.graph_copies), the pre-tick replaying the whole call
#           (model.cuda_warm: replay) and the publisher warmed while the GPU runs the forward
#           (engine.warm_during_forward) together; the tick's graph launched ahead behind a doorbell
#           (model.cuda_warm: launch), alone and with the warmed publisher; the subscriber busy-polling 0.5 ms
#           around each tick (Subscriber spin_s) on ipc; the launch ahead, the warmed publisher and the
#           spinning subscriber on ipc together (needs the carried wheels of tools/gpu_wheels.sh, as e2e does);
#   profile tools/profile_gpu.py: GPU time per kernel of the Triton and fused forwards, against the graph's
#           replay;
#   probe   tools/gpu_phase_probe.py: a chain of kernels against one persistent kernel with grid barriers (does
#           a persistent processor pay?), checked for correctness, under a 90 s limit (a barrier that hangs is
#           killed);
#   sweep   tools/profile_gpu.py --sweep: the Triton forward's tunings (encoder programs, FFN hidden units,
#           summed-layout row blocks, the latents' kernels' warps, column chunks and unrolled loops);
#   bench   `poyo-rt bench forward` on CUDA, both configs: eager, CUDA graph (exact), fused graph, Triton graph
#           (both residual layouts), TF32 variants; kernel counts and errors per row (the JSON is written after
#           each config); with COMPILE=1 also the fused graph compiled by inductor (default mode);
#   e2e     `poyo-rt bench e2e` on CUDA (LSL player process -> engine with CUDA graphs -> ZeroMQ subscriber
#           process), E2E_S seconds (default 30) each run of E2E_RUNS (KERNELS:SPIN_MS:PRE_TICK[:CORES];
#           default "auto:1:on auto:1:on:3 auto:0.5:off": the default loop (woken 1 ms before each tick,
#           tokenizing early and warming the tick's code), the same with the loop pinned to core 3 and the player
#           and subscriber on the other cores (--cpu-affinity), then the seventh session's loop (spin 0.5 ms, no
#           pre-tick)), when the carried wheels of tools/gpu_wheels.sh are there (run that here first, then
#           carry ".whl"); E2E_FLAGS: more `bench e2e` flags for every run (e.g. "--graph-copies
#           --receiver-spin-ms 0.5");
# then, outside STEPS: with AUTOTUNE=1 poyo_1.3M compiled in max-autotune-no-cudagraphs mode (minutes of
# autotuning); with TRITON_TESTS=1 the Triton kernel tests compiled for the GPU (TRITON_INTERPRET=0), kernel by
# kernel and end to end (many kernel variants to compile; the bench rows already give each Triton forward's
# error, and CI runs these tests under Triton's interpreter).
# Run from the repo root: bash tools/gpu_check.sh  (JSON results go to $OUT when OUT is set)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
BUDGET=${BUDGET:-540}
E2E_S=${E2E_S:-30}
STEPS=" ${STEPS:-tests wake levers profile probe sweep bench e2e} "
want() { [[ "$STEPS" == *" $1 "* ]]; }
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
T0=$SECONDS
step() {  # step SECONDS DESCRIPTION COMMAND...: run COMMAND under a timeout if it fits in the budget
  local limit=$1 what=$2; shift 2
  local left=$((BUDGET - (SECONDS - T0)))
  if [ "$left" -lt 30 ]; then echo "== skipped (budget spent): $what"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== [$((SECONDS - T0)) s] $what (limit ${limit} s)"
  timeout "$limit" "$@"
  echo "== [$((SECONDS - T0)) s] exit $?: $what"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # no install needed: torch, numpy, yaml, einops are there
# torch_brain is not on the GPU machine: the parity suite runs in CI; here GPU vs eager vs CPU.
want tests && step 200 "GPU tests" python3 -m pytest -q -p no:cacheprovider --durations=0 tests/test_gpu.py tests/test_static.py
want wake && step 100 "the runner's host time a call" python3 tools/gpu_wake.py --json "$OUT/gpu_wake.json"
if want levers && python3 -c "import pylsl, zmq" 2>/dev/null; then
  step 300 "host levers on the CUDA runner, alternating rounds" env LSLAPICFG=$PWD/poyo_rt/stream/loopback.cfg \
    python3 tools/host_overhead.py --device cuda --rounds "${LEVER_ROUNDS:-3}" --seconds "${LEVER_S:-10}" --variant 1:on \
    --variant 1:on:copies:replay:overlap --variant 1:on:launch --variant 1:on:launch:overlap --variant 1:on:ipc:rspin \
    --variant 1:on:ipc:launch:overlap:rspin --json "$OUT/host_levers_gpu.json"
fi
want profile && step 120 "GPU time per kernel" python3 tools/profile_gpu.py --slots 2200 --slots 4096 \
  --json "$OUT/profile_gpu.json"
want probe && step 90 "persistent kernel probe" python3 tools/gpu_phase_probe.py --json "$OUT/phase_probe.json"
want sweep && step 150 "Triton tunings" python3 tools/profile_gpu.py --sweep --json "$OUT/sweep_gpu.json"
compile=(); [ "${COMPILE:-0}" = 1 ] && compile=(--compile default)
want bench && step 200 "forward bench: exact, fused, Triton (both residual layouts), TF32 ${compile[*]}" python3 -m poyo_rt.cli \
  bench forward --device cuda --iters 300 --tf32 "${compile[@]}" --json "$OUT/bench_gpu.json"
if ! want e2e; then
  :
elif python3 -c "import pylsl, zmq" 2>/dev/null; then
  for run in ${E2E_RUNS:-auto:1:on auto:1:on:3 auto:0.5:off}; do  # KERNELS:SPIN_MS:PRE_TICK[:CORES]
    IFS=: read -r kernels spin pre cores <<< "$run"
    tag="${kernels}_spin${spin}_pre${pre:-on}${cores:+_cores$cores}" pre_flag=() pin_flag=()
    [ "${pre:-on}" = off ] && pre_flag=(--no-pre-tick)
    [ -n "$cores" ] && pin_flag=(--cpu-affinity "$cores")
    step $((E2E_S + 45)) "end to end, $E2E_S s, $kernels kernels, woken $spin ms early, pre-tick ${pre:-on}, loop on cores ${cores:-any}" \
      env LSLAPICFG=$PWD/poyo_rt/stream/loopback.cfg python3 -m poyo_rt.cli bench e2e --device cuda \
      --kernels "$kernels" --spin-ms "$spin" "${pre_flag[@]}" "${pin_flag[@]}" ${E2E_FLAGS:-} --duration "$E2E_S" --baseline-duration 0 \
      --json "$OUT/e2e_gpu_$tag.json" --report-dir "$OUT/e2e_logs_$tag"
  done
else
  echo "pylsl/pyzmq absent: e2e skipped (bash tools/gpu_wheels.sh here, then carry .whl)"
fi
if [ "${AUTOTUNE:-0}" = 1 ]; then
  step 200 "forward bench: poyo_1.3M compiled max-autotune-no-cudagraphs" python3 -m poyo_rt.cli bench forward \
    --device cuda --iters 300 --config poyo_1.3M --compile max-autotune-no-cudagraphs --json "$OUT/bench_gpu_autotune.json"
fi
# last: every kernel variant the tests use compiles here first (many; the bench above compiled its own)
[ "${TRITON_TESTS:-0}" = 1 ] && step 200 "Triton kernels compiled for the GPU" env TRITON_INTERPRET=0 python3 -m pytest -q -p no:cacheprovider \
  tests/test_triton_kernels.py
echo "== done in $((SECONDS - T0)) s"
