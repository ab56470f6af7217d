"""Benchmark of the temporal attention: UNet call time with and without the patches, and TTA memory.

Prints ``name=value`` lines:

- ``unet_{plain,patched,swcfa_only,tta_only}_s`` and ``unet_*_ratio``: seconds per UNet call of the
  tiny SD1.5-shaped model (ComfyUI's own UNet, random weights) on a cond+uncond batch of F frames,
  without and with DiffFERV's patches (SWCFA w=3 and TTA at every resolution, cross-attention control
  installed, no PreservationControl), and with only one of the two attentions; the fastest of
  `--repeats` interleaved calls each, in the same run. Measured as CPU time of one thread
  (``time.process_time`` with torch.set_num_threads(1)), which other jobs on a shared machine do not
  inflate. Target: patched ratio <= 1.5.
- ``tta_peak_mb_F{16,32}`` / ``gather_peak_mb_F{16,32}`` and their ratios: peak memory allocated while
  computing trajectory attention on a 64x64 grid (SD1.5's full-resolution blocks, 8 heads, fp16, one
  chunk; 160 channels, half of SD1.5's 320, so that the gather reference stays near 4 GB on a shared
  CPU machine: every term scales linearly with the width), for this pack's grouped TTA and for a
  FLATTEN-style implementation that gathers, for every token, its own copy of its trajectory's keys
  and values ((F*HW, F, C) tensors). Memory is
  measured with torch's CPU memory profiler (``torch.profiler`` with profile_memory=True: the running
  sum of its allocation/free events; tensors that exist before the call are not counted). Target: TTA
  linear in frames (peak ratio F32/F16 about 2; the gather grows about 4x).

Run: ``.venv/bin/python tests/benchmarks/bench_attention.py`` (several minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import conftest  # noqa: E402, F401  (registers the pack as `comfyui_diffferv`)
from comfyui_diffferv.attention.tta import TrajectoryGroups, trajectory_attention  # noqa: E402
from comfyui_diffferv.flow.trajectory_set import TrajectoryGrid, TrajectorySet  # noqa: E402
from naive_attention import random_trajectories  # noqa: E402


def peak_bytes(fn) -> tuple[int, object]:
    """(peak of the bytes allocated minus freed by torch on the CPU while fn() runs, fn's result)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak, result


def gather_attention(q, k, v, grid: TrajectoryGrid, heads: int) -> torch.Tensor:
    """FLATTEN-style trajectory attention for one chunk: every token gets its own [F, C] copy of its
    trajectory's keys and values (padded to F, masked). q, k, v: [F, N, C]. Products are taken
    elementwise, so the peak is about three per-token copies (keys, values, one product)."""
    frames, cells, inner = q.shape
    d = inner // heads
    own = grid.index[grid.ids.reshape(-1)]  # [F*N, F] the tokens of each token's trajectory, -1 padded
    keys = k.reshape(frames * cells, inner)[own.clamp(min=0)].view(-1, frames, heads, d)  # [F*N, F, h, d]
    values = v.reshape(frames * cells, inner)[own.clamp(min=0)].view(-1, frames, heads, d)
    scores = (q.reshape(-1, 1, heads, d) * keys).sum(-1).float() * d**-0.5  # [F*N, F, heads]
    weights = torch.softmax(scores.masked_fill((own < 0)[:, :, None], float("-inf")), dim=1)
    return (weights.to(v.dtype)[..., None] * values).sum(1).reshape(frames, cells, inner)


def memory(frames: int, size: int = 64, inner: int = 160, heads: int = 8, dtype=torch.float16) -> dict:
    grid = random_trajectories(frames, size, size, keep=0.97, seed=frames)
    groups = TrajectoryGroups.from_grid(grid)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(frames, size * size, inner, generator=generator).to(dtype) for _ in range(3))
    ours, out = peak_bytes(lambda: trajectory_attention(q, k, v, groups, 1, heads))
    gather, reference = peak_bytes(lambda: gather_attention(q, k, v, grid, heads))
    return {"tta": ours, "gather": gather, "max_abs_diff": float((out - reference).abs().max())}


def trajectories_for(frames: int, size: int) -> TrajectorySet:
    from comfyui_diffferv.flow.trajectories import level_grid
    from comfyui_diffferv.nodes.attention_patches import LEVELS

    grids = {}
    for level in range(LEVELS):
        h, w = level_grid((size, size), level)
        grids[(h, w)] = random_trajectories(frames, h, w, keep=0.97, seed=level)
    return TrajectorySet(frames, (size, size), grids)


@torch.no_grad()
def unet_call(patcher, x, context) -> float:
    """CPU seconds of one UNet evaluation made the way ComfyUI's calc_cond_batch makes it."""
    import comfy.patcher_extension

    options = comfy.patcher_extension.copy_nested_dicts(patcher.model_options["transformer_options"])
    sigmas = torch.full((x.shape[0],), 3.0)
    options.update(cond_or_uncond=[1, 0], sigmas=sigmas)
    start = time.process_time()
    patcher.model.apply_model(x, sigmas, c_crossattn=context, transformer_options=options)
    return time.process_time() - start


def unet_timing(frames: int, size: int, repeats: int, tiny: bool = True) -> dict[str, float]:
    """Fastest of `repeats` calls per variant, the variants interleaved. Single-threaded CPU time: on a
    shared machine wall time mostly measures the neighbours, this process's CPU time does not (and the
    minimum is the least disturbed of the repeats)."""
    from comfy_harness import InProcessComfy, build_unet

    InProcessComfy(Path(tempfile.mkdtemp(prefix="bench_attention_")))
    from comfyui_diffferv.nodes.attention_patches import LEVELS, apply_temporal_attention

    model = build_unet(seed=0, tiny=tiny)
    trajectories = trajectories_for(frames, size)
    variants = {
        "plain": model,
        "patched": apply_temporal_attention(model, trajectories),
        "swcfa_only": apply_temporal_attention(model, None, tta_levels=(False,) * LEVELS),
        "tta_only": apply_temporal_attention(model, trajectories, swcfa_levels=(False,) * LEVELS),
    }
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * frames, 4, size // 8, size // 8, generator=generator)
    context = torch.randn(2 * frames, 77, 768, generator=generator)
    for patcher in variants.values():  # warm-up
        unet_call(patcher, x, context)
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, patcher in variants.items():
            times[name].append(unet_call(patcher, x, context))
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per chunk for the UNet timing")
    parser.add_argument("--size", type=int, default=256, help="frame size in pixels for the UNet timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--full-size", action="store_true", help="time the full SD1.5 architecture instead of the tiny one"
    )
    parser.add_argument(
        "--memory-frames",
        type=int,
        nargs=2,
        default=(16, 32),
        metavar=("F1", "F2"),
        help="the two frame counts of the TTA memory comparison (64x64 grid)",
    )
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)

    timing = unet_timing(args.frames, args.size, args.repeats, tiny=not args.full_size)
    import comfy.ldm.modules.attention  # importable once unet_timing has booted ComfyUI

    print(f"unet_model={'sd15_full' if args.full_size else 'sd15_tiny'}")
    print(f"unet_frames={args.frames}")
    print(f"unet_frame_size_px={args.size}")
    print(f"unet_attention={comfy.ldm.modules.attention.optimized_attention.__name__}")
    for name, seconds in timing.items():
        print(f"unet_{name}_s={seconds:.3f}")
    for name in ("patched", "swcfa_only", "tta_only"):
        print(f"unet_{name}_ratio={timing[name] / timing['plain']:.2f}")

    if args.full_size:
        return
    low, high = args.memory_frames
    peaks = {frames: memory(frames) for frames in (low, high)}
    print("memory_tool=torch.profiler(profile_memory=True)")
    for frames, peak in peaks.items():
        print(f"tta_peak_mb_F{frames}={peak['tta'] / 2**20:.1f}")
        print(f"gather_peak_mb_F{frames}={peak['gather'] / 2**20:.1f}")
        print(f"tta_vs_gather_max_abs_diff_F{frames}={peak['max_abs_diff']:.2e}")
    print(f"tta_peak_ratio_F{high}_F{low}={peaks[high]['tta'] / peaks[low]['tta']:.2f}")
    print(f"gather_peak_ratio_F{high}_F{low}={peaks[high]['gather'] / peaks[low]['gather']:.2f}")


if __name__ == "__main__":
    main()
