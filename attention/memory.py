"""The working memory of DiffFERV's attention patches: the budget that bounds it, and how much the patches
add to one UNet call (what ComfyUI's memory estimate must be told; ``nodes/memory_glue.py`` tells it).

Every patch computes in pieces whose work set stays under `WORK_BYTES`: SWCFA gathers the window keys and
values of a few query frames at a time, TTA a few trajectories at a time, the cross-attention maps (when
they are recorded or injected) a few query tokens at a time. What a patch keeps for the whole call is its
output, which replaces the output the plain attention would have made (ComfyUI's estimate already counts
that), and in the store cache mode the source features of one block moved to the device for the call.
Working sets are freed between blocks, so the patches' peak is that of the largest block, not a sum.
"""

from __future__ import annotations

MIB = 2**20
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
