"""The identity model's cost, side by side in one run: sampling whose preservation features come from the
sampler's own UNet against sampling whose features come from another UNet (the identity model), in both
cache modes.

    python tests/benchmarks/bench_identity_model.py [--frames 8] [--size 128] [--steps 10] [--repeats 3]
        [--full-size]

The demo clip's first `--frames` frames at `--size` px, two random-weight SD1.5-shaped UNets of the same
layout (tiny, or with --full-size the SD1.5 architecture, fp16 on a GPU): the edit UNet samples every
run; the inversion runs on the edit UNet ("same") or on the other ("identity"). Only the sampler is
timed (the inversion costs the same either way), `--repeats` times in turn after one untimed warm-up
pass of all four, the fastest kept. Prints name=value lines:

- ``{store,recompute}_{same,identity}_s_per_step``: sampling wall time per DDIM step;
- ``{store,recompute}_{same,identity}_unet_calls_per_step`` and ``..._frames_per_step``: UNet calls per
  step (recompute with the identity model: two, one of the identity UNet on the source chunk, one of the
  edit UNet on the edit and negative chunks) and the frames they hold together;
- ``{store,recompute}_identity_cost_ratio``: identity / same, per cache mode;
- with a GPU, ``{...}_peak_vram_mib``: peak GPU memory allocated during sampling.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import conftest  # noqa: E402  (registers the pack as comfyui_diffferv)

SOURCE, EDIT = "a photo of a woman", "a photo of an old woman"
SWITCHES = {f"{kind}_{size}": True for kind in ("swcfa", "tta") for size in (64, 32, 16, 8)}
MODES = ("store", "recompute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="short side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed sampler runs per case (fastest kept)")
    parser.add_argument("--full-size", action="store_true", help="the SD1.5 architecture (fp16 on a GPU)")
    args = parser.parse_args()

    import torch
    from comfy_harness import InProcessComfy, build_clip, build_unet, build_vae, unet_calls

    comfy = InProcessComfy(Path(tempfile.mkdtemp(prefix="bench_identity_")))
    shutil.copy(conftest.DEMO_CLIP, comfy.workdir / "input" / conftest.DEMO_CLIP.name)
    cuda = torch.cuda.is_available()
    dtype = torch.float16 if args.full_size and cuda else torch.float32
    tiny = not args.full_size
    clip, vae = build_clip(tiny=tiny), build_vae(tiny=tiny)
    (frames, _, _, _), _ = comfy.run_node(
        "DiffFERV_LoadVideo", video=conftest.DEMO_CLIP.name, max_frames=args.frames, skip_first_frames=0,
        every_nth=1, short_side=args.size, fit="crop",
    )  # fmt: skip
    (trajectories, _), _ = comfy.run_node(
        "DiffFERV_ComputeFlowTrajectories", frames=frames, backend="dis", consistency_threshold=1.0,
        flow_model="none", preview_grid="1/16",
    )  # fmt: skip
    (latent,), _ = comfy.run_node("VAEEncode", pixels=frames, vae=vae)
    models = {}
    for name, seed in (("same", 5), ("identity", 9)):
        unet = build_unet(seed=seed, tiny=tiny, output_scale=0.02, dtype=dtype)
        (models[name],), _ = comfy.run_node(
            "DiffFERV_ApplyTemporalAttention", model=unet, trajectories=trajectories, window=3, **SWITCHES
        )
    edit_model = models["same"]

    print(f"frames={int(frames.shape[0])} size={args.size} steps={args.steps} full_size={args.full_size}")
    inversions = {}
    for mode in MODES:
        for name, model in models.items():
            (inversions[f"{mode}_{name}"], _), _ = comfy.run_node(
                "DiffFERV_DDIMInvertWithCache", model=model, clip=clip, latent=latent, source_prompt=SOURCE,
                trajectories=trajectories, steps=args.steps, cache_mode=mode,
            )  # fmt: skip

    def sample(inversion) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        comfy.run_node(
            "DiffFERV_PreservationInjectSampler", model=edit_model, clip=clip, inversion=inversion,
            edit_prompt=EDIT, negative_prompt="", guidance=5.0, tau_app=0.9, inject_motion=True,
            inject_semantic=True,
        )  # fmt: skip
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for inversion in inversions.values():
        sample(inversion)  # warm-up: trajectory groups, attention kernels, model loading
    seconds = {key: float("inf") for key in inversions}
    for _ in range(args.repeats):
        for key, inversion in inversions.items():
            seconds[key] = min(seconds[key], sample(inversion) / args.steps)
    for key, inversion in inversions.items():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with unet_calls(edit_model) as edit_calls, unet_calls(models["identity"]) as identity_calls:
            sample(inversion)
        calls = edit_calls + (identity_calls if key.endswith("identity") else [])
        print(f"{key}_s_per_step={seconds[key]:.3f}")
        print(f"{key}_unet_calls_per_step={len(calls) / args.steps:g}")
        print(f"{key}_frames_per_step={sum(batch for batch, _ in calls) / args.steps:g}")
        if cuda:
            print(f"{key}_peak_vram_mib={torch.cuda.max_memory_allocated() / 2**20:.0f}")
    for mode in MODES:
        print(f"{mode}_identity_cost_ratio={seconds[f'{mode}_identity'] / seconds[f'{mode}_same']:.2f}")


if __name__ == "__main__":
    main()
