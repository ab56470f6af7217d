"""Benchmark of the editing core: DDIM inversion + preservation-injection sampling, per cache mode.

Prints `name=value` lines: wall seconds per frame (inversion + sampling), peak host memory (RSS of a
fresh process per case) and peak device memory, for the store and recompute modes on the tiny SD1.5-
shaped model at 8 and 16 frames; the measured cache size next to the formula each mode follows; and the
formulas' bytes per frame per step per block for a 512x512 clip on the full SD1.5 UNet.

    python tests/benchmarks/bench_editing.py [--size 128] [--steps 10] [--frames 8 16]
    python tests/benchmarks/bench_editing.py --full-size --size 512 --frames 16 --steps 50   (GPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))


def run_case(mode: str, frames: int, size: int, steps: int, full_size: bool) -> dict:
    """One inversion + one edit in this process; returns the measurements."""
    import conftest  # noqa: F401  (registers the pack's import name)
    import torch
    from comfy_harness import InProcessComfy, build_clip, build_unet, build_vae
    from comfyui_diffferv.editing.preservation import recompute_bytes, store_bytes

    comfy = InProcessComfy(Path(tempfile.mkdtemp()))
    gpu_fp16 = full_size and torch.cuda.is_available()
    dtype = torch.float16 if gpu_fp16 else torch.float32  # built in fp16, as ComfyUI loads it on a GPU
    model = build_unet(seed=5, tiny=not full_size, output_scale=0.02, dtype=dtype)
    clip, vae = build_clip(tiny=not full_size), build_vae(tiny=not full_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(frames, size, size, 3, generator=generator)
    (trajectories, _), _ = comfy.run_node(
        "DiffFERV_ComputeFlowTrajectories",
        frames=images,
        backend="dis",
        consistency_threshold=1.0,
        flow_model="none",
        preview_grid="1/16",
    )
    (latent,), _ = comfy.run_node("VAEEncode", pixels=images, vae=vae)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    (inversion, _), _ = comfy.run_node(
        "DiffFERV_DDIMInvertWithCache",
        model=model,
        clip=clip,
        latent=latent,
        source_prompt="a photo of a woman",
        trajectories=trajectories,
        steps=steps,
        cache_mode=mode,
    )
    inverted = time.perf_counter()
    comfy.run_node(
        "DiffFERV_PreservationInjectSampler",
        model=model,
        clip=clip,
        inversion=inversion,
        edit_prompt="a photo of an old woman",
        negative_prompt="",
        guidance=5.0,
        tau_app=0.9,
        inject_motion=True,
        inject_semantic=True,
    )
    done = time.perf_counter()
    h, w = latent["samples"].shape[-2:]
    channels = int(model.get_model_object("diffusion_model").model_channels)
    cache = inversion.store.nbytes if inversion.store is not None else inversion.latents.numel() * 4
    formula = (
        store_bytes(frames, steps, (h, w), channels)
        if mode == "store"
        else recompute_bytes(frames, steps, (h, w))
    )
    return {
        "invert_s_per_frame": (inverted - start) / frames,
        "sample_s_per_frame": (done - inverted) / frames,
        "total_s_per_frame": (done - start) / frames,
        "peak_host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "cache_mib": cache / 2**20,
        "cache_formula_mib": formula / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--modes", nargs="+", default=["store", "recompute"])
    parser.add_argument(
        "--full-size", action="store_true", help="the full SD1.5 architecture (fp16 on a GPU)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        mode, frames = args.case.split(":")
        print(json.dumps(run_case(mode, int(frames), args.size, args.steps, args.full_size)))
        return

    import conftest  # noqa: F401
    from comfyui_diffferv.editing.preservation import recompute_bytes, store_bytes

    model = "full" if args.full_size else "tiny"
    print(f"model={model}_sd15 size={args.size} steps={args.steps}")
    per_block_store = store_bytes(1, 0, (64, 64)) / 16  # averaged over the 16 blocks, one step, one frame
    print(f"formula_store_bytes_per_frame_per_step_512px={store_bytes(1, 0, (64, 64))}")
    print(f"formula_store_bytes_per_frame_per_step_per_block_512px_mean={per_block_store:.0f}")
    print(f"formula_recompute_bytes_per_frame_per_step_512px={recompute_bytes(1, 0, (64, 64))}")
    print(
        "formula_store=2*(2*N_l*C_l + 8*N_l*77) bytes per frame, step and block (fp16 q,k and maps); "
        "formula_recompute=4*4*h*w bytes per frame and step (fp32 latent), independent of blocks"
    )
    for frames in args.frames:
        for mode in args.modes:
            command = [
                sys.executable,
                __file__,
                "--case",
                f"{mode}:{frames}",
                "--size",
                str(args.size),
                "--steps",
                str(args.steps),
            ]
            if args.full_size:
                command.append("--full-size")
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            values = json.loads(result.stdout.strip().splitlines()[-1])
            for key, value in values.items():
                shown = "n/a" if value is None else f"{value:.3f}"
                print(f"{model}_{mode}_{frames}f_{key}={shown}")


if __name__ == "__main__":
    main()
