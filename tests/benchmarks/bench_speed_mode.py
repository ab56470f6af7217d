"""Speed mode against full mode, side by side in one run: UNet work, time and temporal consistency.

    python tests/benchmarks/bench_speed_mode.py [--frames 24] [--size 128] [--steps 10] [--every 4]

The demo clip's first `--frames` frames at `--size` px, the tiny random-weight SD1.5-shaped model (CPU),
store cache mode, `--steps` DDIM steps, edit "a photo of an old woman". Full mode edits every frame;
speed mode edits every k-th frame and the last (Select Keyframes), then carries the change to the others
(Propagate Keyframe Edit). Prints name=value lines:

- ``{full,speed}_unet_frame_evaluations_per_frame``: frames the UNet processed (the sum of its batch sizes,
  inversion and sampling) per output frame, and ``unet_evaluation_ratio`` full / speed;
- ``{full,speed}_s_per_frame``: wall time from the frames to the decoded (and, speed, propagated) clip,
  per frame, and ``time_ratio``;
- ``warping_error_{source,full,speed}``: the temporal warping error (metrics.warping, 0..255) of the
  source and of both outputs, measured with the source's flow; ``speed_vs_full_psnr_db``.
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


def edit_clip(comfy, parts, frames, steps):
    """frames IMAGE -> (edited IMAGE, UNet batch sizes): trajectories, encode, invert, sample, decode."""
    from comfy_harness import unet_calls

    model, clip, vae = parts
    with unet_calls(model) as calls:
        (trajectories, _), _ = comfy.run_node(
            "DiffFERV_ComputeFlowTrajectories", frames=frames, backend="dis", consistency_threshold=1.0,
            flow_model="none", preview_grid="1/16",
        )  # fmt: skip
        (latent,), _ = comfy.run_node("VAEEncode", pixels=frames, vae=vae)
        (inversion, _), _ = comfy.run_node(
            "DiffFERV_DDIMInvertWithCache", model=model, clip=clip, latent=latent, source_prompt=SOURCE,
            trajectories=trajectories, steps=steps, cache_mode="store",
        )  # fmt: skip
        (edited,), _ = comfy.run_node(
            "DiffFERV_PreservationInjectSampler", model=model, clip=clip, inversion=inversion, edit_prompt=EDIT,
            negative_prompt="", guidance=5.0, tau_app=0.9, inject_motion=True, inject_semantic=True,
        )  # fmt: skip
        (images,), _ = comfy.run_node("VAEDecode", samples=edited, vae=vae)
    return images, [batch for batch, _ in calls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="short side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--every", type=int, default=4, help="speed mode's keyframe_every")
    args = parser.parse_args()

    from comfy_harness import InProcessComfy, build_clip, build_unet, build_vae
    from comfyui_diffferv.flow.backends import DISFlow
    from comfyui_diffferv.flow.trajectories import compute_source_flow
    from comfyui_diffferv.metrics.image_quality import psnr
    from comfyui_diffferv.metrics.warping import warping_errors

    comfy = InProcessComfy(Path(tempfile.mkdtemp(prefix="bench_speed_")))
    shutil.copy(conftest.DEMO_CLIP, comfy.workdir / "input" / conftest.DEMO_CLIP.name)
    parts = (build_unet(seed=5, output_scale=0.02), build_clip(), build_vae())
    (frames, _, _, _), _ = comfy.run_node(
        "DiffFERV_LoadVideo", video=conftest.DEMO_CLIP.name, max_frames=args.frames, skip_first_frames=0,
        every_nth=1, short_side=args.size, fit="crop",
    )  # fmt: skip
    count = int(frames.shape[0])

    start = time.perf_counter()
    full, full_batches = edit_clip(comfy, parts, frames, args.steps)
    full_s = time.perf_counter() - start

    start = time.perf_counter()
    (keyframes, keyframe_set), _ = comfy.run_node(
        "DiffFERV_SelectKeyframes", frames=frames, keyframe_every=args.every
    )
    edited_keys, speed_batches = edit_clip(comfy, parts, keyframes, args.steps)
    (speed,), _ = comfy.run_node(
        "DiffFERV_PropagateKeyframeEdit", source=frames, edited_keyframes=edited_keys,
        keyframe_set=keyframe_set, backend="dis", consistency_threshold=1.0,
    )  # fmt: skip
    speed_s = time.perf_counter() - start

    flow = compute_source_flow(frames, DISFlow(), 1.0)
    errors = warping_errors([frames, full, speed], flow).nanmean(1)
    full_evals, speed_evals = sum(full_batches) / count, sum(speed_batches) / count
    print(f"frames={count} size={args.size} steps={args.steps} keyframe_every={args.every}")
    print(f"keyframes={len(keyframe_set.indices)}")
    print(f"full_unet_frame_evaluations_per_frame={full_evals:.2f}")
    print(f"speed_unet_frame_evaluations_per_frame={speed_evals:.2f}")
    print(f"unet_evaluation_ratio={full_evals / speed_evals:.2f}")
    print(f"full_s_per_frame={full_s / count:.3f}")
    print(f"speed_s_per_frame={speed_s / count:.3f}")
    print(f"time_ratio={full_s / speed_s:.2f}")
    for name, value in zip(("source", "full", "speed"), errors.tolist(), strict=True):
        print(f"warping_error_{name}={value:.3f}")
    print(f"speed_vs_full_psnr_db={float(psnr(speed, full).mean()):.2f}")


if __name__ == "__main__":
    main()
