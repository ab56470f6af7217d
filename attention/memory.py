"""The working memory of DiffFERV's attention patches: the budget that bounds it, and how much the patches
add to one UNet call (what ComfyUI's memory estimate must be told; ``nodes/memory_glue.py`` tells it).

Every patch computes in pieces whose work set stays under `WORK_BYTES`: SWCFA gathers the window keys and
values of a few query frames at a time, TTA a few trajectories at a time, the cross-attention maps (when
they are recorded or injected) a few query tokens at a time. What a patch keeps for the whole call is its
output, which replaces the output the plain attention would have made (ComfyUI's estimate already counts
that), and in the store cache mode the source features of one block moved to the device for the call.
Working sets are freed between blocks, so the patches' peak is that of the largest block, not a sum.

What fits where (`gpu_need`, `largest_window`): the GPU memory a run needs at a size, from the SD1.5
UNet's weights, ComfyUI's own estimate of the largest UNet call (its ``memory_required`` formula for
flash / xformers attention, what CUDA GPUs run) told the call's real rows (window x chunks) and the
patches' extra (`patch_bytes`), and ComfyUI's rules: a batch runs whole when 1.5x its estimate is free,
and ``EXTRA_RESERVED_VRAM`` stays free. Computed, not measured. The README's GPU table and the `edit`
plan come from these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIB = 2**20
GIB = 2**30
WORK_BYTES = 128 * MIB
"""Work-set cap of one attention piece (SWCFA's gathered keys/values, TTA's gathered trajectories, a slice of
cross-attention maps): what bounds the patches' extra memory whatever the batch size."""

SD15_BASE_CHANNELS = 320
SD15_HEADS = 8
SD15_CONTEXT_TOKENS = 77


def pieces(total: int, per_item_bytes: int, budget: int = WORK_BYTES) -> int:
    """How many of `total` items (query frames, trajectories, query tokens) one piece may hold so that
    its work set, `per_item_bytes` each, stays under `budget` (at least 1)."""
    return max(1, min(total, budget // max(per_item_bytes, 1)))


def patch_bytes(
    frames: int,
    latent_hw: tuple[int, int],
    element_size: int,
    cached_source: bool,
    base_channels: int = SD15_BASE_CHANNELS,
) -> int:
    """Peak bytes the patches add to one UNet call on top of the plain call: one work set (`WORK_BYTES`;
    a piece may exceed it by one item, bounded by a frame's level-0 tensors, counted too) and, when the
    source features come from a store (`cached_source`), one block's source features for the `frames` of
    a chunk moved to the call's device (the largest block: level 0, N = h*w tokens, q and k of
    `base_channels` channels or the 8-head x 77-token cross-attention maps).

    latent_hw: the latent grid (h, w) of the frames (512 px: 64x64); element_size: the UNet's dtype size."""
    tokens = latent_hw[0] * latent_hw[1]
    one_frame = 4 * tokens * base_channels * element_size  # a piece's overshoot: q, k, v, out of a frame
    cached = 0
    if cached_source:
        cached = frames * tokens * max(2 * base_channels, SD15_HEADS * SD15_CONTEXT_TOKENS) * element_size
    return WORK_BYTES + one_frame + cached


SD15_UNET_PARAMETERS = 859_520_964
"""Parameters of the SD1.5 UNet (ComfyUI's model of the real architecture; tests/test_gpu_fit.py counts
them): its weights are this times the dtype's size, 1.6 GiB in fp16 / bf16."""
COMFY_RESERVE = 400 * MIB
"""What ComfyUI keeps free on the GPU (``comfy.model_management.EXTRA_RESERVED_VRAM`` on Linux; 600 MiB on
Windows, set with --reserve-vram)."""
COMFY_HEADROOM = 1.5
"""ComfyUI runs a batch of chunks in one UNet call when 1.5x its estimate is free (``comfy.samplers``),
else it splits the chunks into several calls."""


def comfy_row_bytes(latent_hw: tuple[int, int], element_size: int) -> float:
    """ComfyUI's ``memory_required`` of one SD1.5 row (one frame of one chunk) at the latent grid (h, w),
    with flash / xformers attention (CUDA GPUs): h * w * dtype size * 0.01 MiB (82 MiB at 512 px in fp16)."""
    return latent_hw[0] * latent_hw[1] * element_size * 0.01 * MIB


@dataclass(frozen=True)
class GpuNeed:
    """The GPU memory of a run (bytes): `weights` of the UNet, `call` ComfyUI's estimate for the largest
    UNet call (`rows` frame rows plus the patches' extra), and `total`, what the GPU must hold for that
    call to run whole without offloading weights: weights + 1.5 x call + ComfyUI's reserve."""

    weights: int
    rows: int
    call: int
    total: int


def gpu_need(window: int, chunks: int, latent_hw: tuple[int, int], element_size: int = 2) -> GpuNeed:
    """The GPU memory of a run whose largest UNet call holds `window` frames x `chunks` chunks (sampling:
    3 in the recompute cache mode, 2 in store, whose source features come from the store) at the latent
    grid `latent_hw` (512 px: 64x64), the UNet in a dtype of `element_size` bytes (fp16 / bf16: 2)."""
    weights = SD15_UNET_PARAMETERS * element_size
    rows = window * chunks
    extra = patch_bytes(window, latent_hw, element_size, cached_source=chunks == 2)
    call = math.ceil(rows * comfy_row_bytes(latent_hw, element_size)) + extra
    return GpuNeed(weights, rows, call, weights + math.ceil(COMFY_HEADROOM * call) + COMFY_RESERVE)


def largest_window(
    gpu_bytes: int, chunks: int, latent_hw: tuple[int, int], element_size: int = 2, longest: int = 256
) -> int:
    """The largest window (1 .. `longest` frames) whose run fits a GPU of `gpu_bytes` (`gpu_need`'s total);
    0 when not even one frame does."""
    fitting = [
        w for w in range(1, longest + 1) if gpu_need(w, chunks, latent_hw, element_size).total <= gpu_bytes
    ]
    return max(fitting, default=0)
