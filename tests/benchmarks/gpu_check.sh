#!/usr/bin/env bash
# The full-size GPU check of long clips in context windows, in one call: the SD1.5 architecture (random
# weights, fp16), 512x512 frames of the long demo clip, 50 + 50 DDIM steps, 48 frames in windows of 16
# overlapping by 4; seconds per frame, peak VRAM next to the UNet's weights and ComfyUI's estimate of the
# largest call, host-device syncs inside UNet calls (sync debug mode "warn"), the largest UNet batch and
# peak host RAM for the recompute cache mode, and for the store mode (whose cache at 48 windowed frames,
# about 259 GB, fits no 128 GB host: the benchmark says so and the store mode runs on 16 frames, one
# window, about 65 GB); then one recompute edit of one window under a memory cap that makes ComfyUI split
# cond from uncond: UNet rows per step (--split). On the CPU (--smoke) the GPU-only parts print a
# "skipped" line.
# Expected under 8 minutes on an H100 (not yet run on one). Needs the test environment
# (bash tests/setup_env.sh); DIFFFERV_PYTHON picks another Python.
#
#   bash tests/benchmarks/gpu_check.sh           # the full check (needs a CUDA GPU)
#   bash tests/benchmarks/gpu_check.sh --smoke   # the same path at a tiny size on the CPU
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${DIFFFERV_PYTHON:-}" ]; then
    PY=$DIFFFERV_PYTHON
elif [ -x "${DIFFFERV_VENV:-.venv}/bin/python" ]; then
    PY=${DIFFFERV_VENV:-.venv}/bin/python
else
    PY=python3
fi
BENCH=tests/benchmarks/bench_long_clips.py
if [ "${1:-}" = "--smoke" ]; then
    common=(--size 64 --steps 2 --window 4 --overlap 1)
    frames=6
    store_frames=4
else
    "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA GPU (use --smoke on a CPU)')"
    "$PY" -c "import torch; print('device=' + torch.cuda.get_device_name(0).replace(' ', '_'), 'torch=' + torch.__version__)"
    common=(--full-size --size 512 --steps 50 --window 16 --overlap 4)
    frames=48
    store_frames=16
fi
start=$SECONDS
"$PY" "$BENCH" "${common[@]}" --frames "$frames" --modes recompute store
"$PY" "$BENCH" "${common[@]}" --frames "$store_frames" --modes store --split
echo "gpu_check_wall_s=$((SECONDS - start))"
