#!/usr/bin/env bash
# The full-size GPU check of long clips in context windows, in one call of at most 8 minutes, on a bare GPU
# machine: the SD1.5 architecture (random weights, fp16), 512x512 frames of the long demo clip, windows of
# 16 overlapping by 4. Three cases, each in its own process under its own timeout, a line as each ends
# (`case_done NAME SECONDS` or `case_failed NAME WHY`; a failed case does not stop the others):
#   split      one recompute edit of one window under a memory cap that makes ComfyUI split cond from
#              uncond (512 MiB of slack left free, CUDA modules loaded eagerly, any CUDA out-of-memory
#              error reported): UNet rows per step, the peak, the free memory ComfyUI saw and the estimate
#              it was handed
#   recompute  48 frames, 50 + 50 steps: seconds per frame, peak VRAM next to the UNet's weights, ComfyUI's
#              estimate of the largest call and what it was handed, host-device syncs inside UNet calls,
#              the largest UNet batch, peak host RAM
#   store      8 frames, 20 + 20 steps (its cache: about 13 GB of host RAM)
# First it checks the Python, PyTorch's CUDA build, the driver, the GPU and every import, and says in one
# line what is missing (gpu_preflight.py). The cases use ComfyUI's own allocator set-up (cudaMallocAsync,
# as its cuda_malloc.py picks). On the CPU (--smoke) the same cases run at a tiny size and the GPU-only
# parts print a "skipped" line.
#
#   bash tests/benchmarks/gpu_check.sh                  # the test environment's Python (tests/setup_env.sh)
#   bash tests/benchmarks/gpu_check.sh --wheels .whl    # a bare machine: its python3 + a wheel folder made
#                                                       # here by tests/benchmarks/gpu_wheels.sh
#   bash tests/benchmarks/gpu_check.sh --smoke          # the same path at a tiny size on the CPU
# DIFFFERV_PYTHON picks another Python. tests/benchmarks/README.md gives the device tool's call.
set -uo pipefail
cd "$(dirname "$0")/../.."
smoke=0
wheels=
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) smoke=1 ;;
        --wheels) wheels=$2; shift ;;
        *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "${DIFFFERV_PYTHON:-}" ]; then
    PY=$DIFFFERV_PYTHON
elif [ -z "$wheels" ] && [ -x "${DIFFFERV_VENV:-.venv}/bin/python" ]; then
    PY=${DIFFFERV_VENV:-.venv}/bin/python
else
    PY=python3
fi
export PYTHONUNBUFFERED=1
if [ -n "$wheels" ]; then
    site=${TMPDIR:-/tmp}/diffferv_gpu_check_site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$wheels"/*.whl || { echo "gpu_check: the wheels in $wheels did not install"; exit 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
start=$SECONDS
preflight=$("$PY" tests/benchmarks/gpu_preflight.py $([ $smoke = 1 ] && echo --smoke)) || {
    echo "$preflight"
    exit 1
}
echo "$preflight" | grep -v '^alloc_conf='
alloc_conf=$(echo "$preflight" | sed -n 's/^alloc_conf=//p')
[ -n "$alloc_conf" ] && export PYTORCH_CUDA_ALLOC_CONF=$alloc_conf
echo "alloc_conf=${alloc_conf:-default}"

BENCH=tests/benchmarks/bench_long_clips.py
if [ $smoke = 1 ]; then
    common=(--size 64 --window 4 --overlap 1)
    steps=2 frames=6 store_steps=2 store_frames=4 limit=300
else
    common=(--full-size --size 512 --window 16 --overlap 4)
    steps=50 frames=48 store_steps=20 store_frames=8 limit=0
fi
failed=0

run_case() {  # NAME SECONDS COMMAND...: one case under its own timeout
    local name=$1 seconds=$2 began=$SECONDS
    shift 2
    [ "$limit" -gt 0 ] && seconds=$limit
    timeout --kill-after=10 "$seconds" "$@"
    local status=$?
    if [ $status = 0 ]; then
        echo "case_done $name $((SECONDS - began))s"
    elif [ $status = 124 ] || [ $status = 137 ]; then
        echo "case_failed $name timed out after ${seconds}s"
        failed=1
    else
        echo "case_failed $name exit $status after $((SECONDS - began))s"
        failed=1
    fi
}

CUDA_MODULE_LOADING=EAGER run_case split 120 \
    "$PY" "$BENCH" "${common[@]}" --steps "$steps" --frames "$frames" --modes --split
run_case recompute 240 "$PY" "$BENCH" "${common[@]}" --steps "$steps" --frames "$frames" --modes recompute
run_case store 90 "$PY" "$BENCH" "${common[@]}" --steps "$store_steps" --frames "$store_frames" --modes store
echo "gpu_check_wall_s=$((SECONDS - start))"
exit $failed
