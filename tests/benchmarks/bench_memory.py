"""Benchmark of the memory one UNet call needs with DiffFERV's patches, next to ComfyUI's estimate.

Prints ``name=value`` lines:

- ``unet_{plain,patched}_peak_mb``: peak memory allocated during one call of the SD1.5 UNet (ComfyUI's
  own, random weights; the full architecture with --full-size) on F frames x 3 chunks (edit, negative and
  the recompute mode's source chunk) at --size px: without patches, and with SWCFA + TTA at every
  resolution and a PreservationControl that injects the source chunk's q/k (SWCFA and TTA) and its
  cross-attention maps into both other chunks (an appearance step of a recompute-mode edit: the most
  the patches do in one call). ``unet_patch_extra_mb`` is the difference, ``unet_patch_extra_share``
  its share of the plain call's peak.
- ``comfy_estimate_{rows}_mb``: ComfyUI's own estimate (``BaseModel.memory_required``) for the call's
  rows, on this device and, for comparison, for a CUDA GPU in fp16 with flash attention (what ComfyUI
  plans with on the GPUs users have).
- ``level0_*_peak_mb`` and ``level0_*_extra_mb``: the patches' working memory by kind, on one attention
  call at SD1.5's full-resolution shapes (a 64x64 grid for 512 px: 4096 tokens, 320 channels, 8 heads;
  attn2 with 77 context tokens), F frames x 3 chunks: ComfyUI's plain attention, SWCFA, TTA, both with
  injection, cross-attention with maps recorded (the inversion's store mode, one chunk) and injected.
  Each extra is the kind's peak minus the plain attention's of the same shapes.

Memory is measured with ``tests/memory_probe.peak_bytes`` (the CPU memory profiler, or the CUDA
allocator's peak): tensors that exist before the call (weights, inputs) are not counted.

    python tests/benchmarks/bench_memory.py                          (tiny UNet, 64 px, seconds)
    python tests/benchmarks/bench_memory.py --full-size --size 512 --frames 2   (minutes on 2 CPU cores)
    python tests/benchmarks/bench_memory.py --full-size --size 512 --frames 16  (GPU, fp16)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import conftest  # noqa: E402, F401  (registers the pack as `comfyui_diffferv`)
from memory_probe import peak_bytes  # noqa: E402
from naive_attention import random_trajectories  # noqa: E402

MIB = 2**20
ROLES = ("edit", "negative", "source")


def trajectories_for(frames: int, size: int):
    from comfyui_diffferv.flow.trajectory_set import TrajectorySet
    from comfyui_diffferv.nodes.attention_patches import LEVELS, level_grid

    grids = {}
    for level in range(LEVELS):
        h, w = level_grid((size, size), level)
        grids[(h, w)] = random_trajectories(frames, h, w, keep=0.97, seed=level)
    return TrajectorySet(frames, (size, size), grids)


def injecting_control(sigma: float):
    """A recompute-mode control at an appearance step: edit and negative take q/k (SWCFA, TTA) and every
    cross-attention map column from the source chunk of the same batch."""
    from comfyui_diffferv.attention.control import Injection, PreservationControl

    inject = Injection(
        source="source", swcfa_steps=None, tta_steps=None, cross_steps=None, token_map=torch.arange(77)
    )
    return PreservationControl(torch.tensor([sigma]), injections={"edit": inject, "negative": inject})


def call_options(patcher, rows: int, sigma: float, device, control=None, roles=ROLES) -> dict:
    """transformer_options of one UNet call as ComfyUI's calc_cond_batch builds them (+ our control)."""
    import comfy.patcher_extension
    from comfyui_diffferv.attention.control import CONTROL_KEY, ROLES_KEY

    options = comfy.patcher_extension.copy_nested_dicts(patcher.model_options["transformer_options"])
    options.update(cond_or_uncond=[0] * len(roles), sigmas=torch.full((rows,), sigma, device=device))
    options[ROLES_KEY] = roles
    if control is not None:
        options[CONTROL_KEY] = control
    return options


@torch.no_grad()
def unet_peaks(frames: int, size: int, full_size: bool, device) -> dict[str, float]:
    import comfy.model_management as mm
    from comfy_harness import build_unet
    from comfyui_diffferv.attention.memory import comfy_row_bytes
    from comfyui_diffferv.nodes.attention_patches import apply_temporal_attention

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = build_unet(seed=0, tiny=not full_size, dtype=dtype)
    mm.load_models_gpu([model])
    patched = apply_temporal_attention(model, trajectories_for(frames, size))
    rows, sigma = 3 * frames, 3.0
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4, size // 8, size // 8, generator=generator).to(device, dtype)
    context = torch.randn(rows, 77, 768, generator=generator).to(device, dtype)
    t = torch.full((rows,), sigma, device=device)

    def call(patcher, control=None):
        options = call_options(patcher, rows, sigma, device, control)
        return lambda: patcher.model.apply_model(x, t, c_crossattn=context, transformer_options=options)

    call(patched, injecting_control(sigma))()  # warm-up (trajectory groups built, kernels loaded)
    plain, _ = peak_bytes(call(model), device)
    ours, _ = peak_bytes(call(patched, injecting_control(sigma)), device)
    base = model.model
    latent = [size // 8, size // 8]
    return {
        "rows": rows,
        "plain": plain,
        "patched": ours,
        "estimate": base.memory_required([rows, 4, *latent]),
        "estimate_two_chunks": base.memory_required([2 * frames, 4, *latent]),
        "estimate_gpu_fp16": rows * comfy_row_bytes(tuple(latent), 2),
    }


def level0_peaks(frames: int, size: int, device) -> dict[str, int]:
    """Peak memory of one attention call at the full-resolution block's shapes, by kind."""
    import comfy.ldm.modules.attention as comfy_attention
    from comfyui_diffferv.attention.control import CONTROL_KEY, ROLES_KEY, PreservationControl
    from comfyui_diffferv.attention.feature_store import FeatureStore
    from comfyui_diffferv.attention.patches import CrossAttentionControl, TemporalSelfAttention
    from comfyui_diffferv.nodes.attention_patches import comfy_attention as attention_fn

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    h = w = size // 8
    tokens, inner, heads, rows = h * w, 320, 8, 3 * frames
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(rows, tokens, inner, generator=generator).to(device, dtype) for _ in range(3))
    kc, vc = (torch.randn(rows, 77, inner, generator=generator).to(device, dtype) for _ in range(2))
    trajectories = trajectories_for(frames, size)
    sigma = 3.0

    def options(control=None, roles=ROLES):
        out = {
            "n_heads": heads,
            "dim_head": inner // heads,
            "activations_shape": [rows, inner, h, w],
            "block": ("input", 1),
            "block_index": 0,
            "cond_or_uncond": [0] * len(roles),
            "sigmas": torch.full((len(roles) * frames,), sigma, device=device),
            ROLES_KEY: roles,
        }
        if control is not None:
            out[CONTROL_KEY] = control
        return out

    both = TemporalSelfAttention(trajectories=trajectories, attention_fn=attention_fn)
    swcfa = TemporalSelfAttention(tta=False, attention_fn=attention_fn)
    tta = TemporalSelfAttention(swcfa=False, trajectories=trajectories, attention_fn=attention_fn)
    cross = CrossAttentionControl(attention_fn)
    store = FeatureStore(dtype=dtype, device=device)
    record = PreservationControl(
        torch.tensor([sigma]), cond_roles={0: "source"}, capture="source", store=store
    )
    one = ("source",)
    cases = {
        "attn1_plain": lambda: comfy_attention.optimized_attention(q, k, v, heads),
        "attn1_swcfa": lambda: swcfa(q, k, v, options()),
        "attn1_tta": lambda: tta(q, k, v, options()),
        "attn1_swcfa_tta": lambda: both(q, k, v, options()),
        "attn1_injected": lambda: both(q, k, v, options(injecting_control(sigma))),
        "attn2_plain": lambda: comfy_attention.optimized_attention(q, kc, vc, heads),
        "attn2_injected": lambda: cross(q, kc, vc, options(injecting_control(sigma))),
        "attn2_plain_one_chunk": lambda: comfy_attention.optimized_attention(
            q[:frames], kc[:frames], vc[:frames], heads
        ),
        "attn2_recorded_one_chunk": lambda: cross(q[:frames], kc[:frames], vc[:frames], options(record, one)),
    }
    both(q, k, v, options())  # builds and keeps the trajectory groups
    peaks = {}
    for name, fn in cases.items():
        store.clear()
        peaks[name], _ = peak_bytes(fn, device)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2, help="frames per chunk (3 chunks per call)")
    parser.add_argument("--size", type=int, default=64, help="frame size in pixels")
    parser.add_argument(
        "--full-size", action="store_true", help="the full SD1.5 UNet instead of the tiny one"
    )
    parser.add_argument("--skip-unet", action="store_true", help="only the level-0 attention calls")
    args = parser.parse_args()
    from comfy_harness import InProcessComfy, host_dir

    sys.path.insert(0, str(host_dir()))
    from comfy.cli_args import args as comfy_args

    # torch's SDPA, as ComfyUI runs it on NVIDIA GPUs (on the CPU ComfyUI would pick the sub-quadratic
    # attention, whose own chunk sizes follow the free RAM and swamp what the patches add)
    comfy_args.use_pytorch_cross_attention = True
    InProcessComfy(Path(tempfile.mkdtemp(prefix="bench_memory_")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device={device.type}")
    print(f"frames_per_chunk={args.frames}")
    print(f"frame_size_px={args.size}")
    level0 = level0_peaks(args.frames, args.size, device)
    import comfy.ldm.modules.attention

    print(f"attention={comfy.ldm.modules.attention.optimized_attention.__name__}")
    for name, peak in level0.items():
        print(f"level0_{name}_peak_mb={peak / MIB:.1f}")
    for name in ("attn1_swcfa", "attn1_tta", "attn1_swcfa_tta", "attn1_injected"):
        print(f"level0_{name}_extra_mb={(level0[name] - level0['attn1_plain']) / MIB:.1f}")
    print(f"level0_attn2_injected_extra_mb={(level0['attn2_injected'] - level0['attn2_plain']) / MIB:.1f}")
    recorded = level0["attn2_recorded_one_chunk"] - level0["attn2_plain_one_chunk"]
    print(f"level0_attn2_recorded_one_chunk_extra_mb={recorded / MIB:.1f}")
    if args.skip_unet:
        return
    unet = unet_peaks(args.frames, args.size, args.full_size, device)
    print(f"unet_model={'sd15_full' if args.full_size else 'sd15_tiny'}")
    print(f"unet_rows={unet['rows']}")
    print(f"unet_plain_peak_mb={unet['plain'] / MIB:.1f}")
    print(f"unet_patched_peak_mb={unet['patched'] / MIB:.1f}")
    print(f"unet_patch_extra_mb={(unet['patched'] - unet['plain']) / MIB:.1f}")
    print(f"unet_patch_extra_share={(unet['patched'] - unet['plain']) / unet['plain']:.2f}")
    print(f"comfy_estimate_{unet['rows']}_rows_mb={unet['estimate'] / MIB:.1f}")
    print(f"comfy_estimate_{2 * args.frames}_rows_mb={unet['estimate_two_chunks'] / MIB:.1f}")
    print(f"comfy_estimate_gpu_fp16_{unet['rows']}_rows_mb={unet['estimate_gpu_fp16'] / MIB:.1f}")


if __name__ == "__main__":
    main()
