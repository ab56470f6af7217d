"""The working memory of DiffFERV's attention patches: the budget that bounds it, and how much the patches
add to one UNet call (what ComfyUI's memory estimate must be told; ``nodes/memory_glue.py`` tells it).

Every patch computes in pieces whose work set stays under `WORK_BYTES`: SWCFA gathers the window keys and
values of a few query frames at a time, TTA a few trajectories at a time, the cross-attention maps (when
they are recorded or injected) a few query tokens at a time. What a patch keeps for the whole call is its
output, which replaces the output the plain attention would have made (ComfyUI's estimate already counts
that), and in the store cache mode the source features of one block moved to the device for the call.
Working sets are freed between blocks, so the patches' peak is that of the largest block, not a sum.

What fits where (`gpu_needs`, `gpu_need`, `largest_window`): the GPU memory a run needs at a size, from
the SD1.5 UNet's weights, ComfyUI's own estimate of a UNet call (its ``memory_required`` formula for flash /
xformers attention, what CUDA GPUs run) told the call's real rows and the patches' extra (`patch_bytes`),
and ComfyUI's rules: a batch of chunks runs in one call when 1.5x its estimate is free, else it is split
(one chunk per call at the least), and ``EXTRA_RESERVED_VRAM`` stays free. A step may take several ways
(`step_paths`): the recompute mode's three chunks in one call, or its source chunk first (its features
then held on the device) and the edit's chunks in one call or one at a time; a window fits when the least
of them does. Computed, not measured. The README's GPU table and the `edit` plan come from these.
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


def swcfa_item_bytes(chunks: int, window: int, tokens: int, inner: int, element_size: int) -> int:
    """Bytes SWCFA holds for one query frame of every chunk: its window's gathered keys and values (2 x
    `window` frames), the query, the attention's output and the attention function's own copies (two
    frames more), each `tokens` x `inner` values."""
    return chunks * (2 * window + 4) * tokens * inner * element_size


def patch_bytes(
    frames: int,
    latent_hw: tuple[int, int],
    element_size: int,
    cached_source: bool,
    chunks: int = 3,
    window: int = 3,
    base_channels: int = SD15_BASE_CHANNELS,
    budget: int = WORK_BYTES,
) -> int:
    """Peak bytes the patches add to one UNet call of `chunks` chunks on top of the plain call: one work set
    (`budget`, the patches' `max_bytes`: `WORK_BYTES`), which a piece of a single item may exceed (SWCFA's
    query frame with its `window`'s keys and values at level 0, the largest item of any patch, counted
    too), and, when the source features come from a store (`cached_source`), one block's source features
    for the `frames` of a chunk moved to the call's device (the largest block: level 0, N = h*w tokens, q
    and k of `base_channels` channels or the 8-head x 77-token cross-attention maps).

    latent_hw: the latent grid (h, w) of the frames (512 px: 64x64); element_size: the UNet's dtype size;
    window: SWCFA's window (Apply Temporal Attention's, 3 by default)."""
    tokens = latent_hw[0] * latent_hw[1]
    item = swcfa_item_bytes(chunks, window, tokens, base_channels, element_size)
    cached = 0
    if cached_source:
        cached = frames * tokens * max(2 * base_channels, SD15_HEADS * SD15_CONTEXT_TOKENS) * element_size
    return budget + item + cached


@dataclass(frozen=True)
class UNetCall:
    """One kind of UNet call a run may make: `chunks` chunks of a window's frames (2 for a guided edit, 3
    with the recompute mode's source chunk, 1 for the inversion or the source path run alone);
    `cached_source`: its source features come from a host store and are moved to the device per block;
    `held_per_frame`: bytes per frame of the window held on the device through the call (the one-step
    store of the source path run in a call of its own)."""

    chunks: int
    cached_source: bool = False
    held_per_frame: int = 0


SD15_UNET_PARAMETERS = 859_520_964
"""Parameters of the SD1.5 UNet (ComfyUI's model of the real architecture; tests/test_gpu_fit.py counts
them): its weights are this times the dtype's size, 1.6 GiB in fp16 / bf16."""
COMFY_RESERVE = 400 * MIB
"""What ComfyUI keeps free on the GPU (``comfy.model_management.EXTRA_RESERVED_VRAM`` on Linux; 600 MiB on
Windows, set with --reserve-vram)."""
COMFY_HEADROOM = 1.5
"""ComfyUI runs a batch of chunks in one UNet call when 1.5x its estimate is free (``comfy.samplers``),
else it splits the chunks into several calls."""
CUDA_CONTEXT = 600 * MIB
"""What a card's memory loses before ComfyUI loads anything: the CUDA context of the process (about
450 MiB with torch's kernels loaded) and what the driver and a desktop keep (the README's table assumes
this much; the `edit` command reads the memory really free instead)."""


def card_free(gigabytes: int) -> int:
    """The memory free to ComfyUI on a card sold as `gigabytes` GB (that many GiB, less `CUDA_CONTEXT`):
    an 8 GB card has about 7.4 GiB."""
    return gigabytes * GIB - CUDA_CONTEXT


def comfy_row_bytes(latent_hw: tuple[int, int], element_size: int) -> float:
    """ComfyUI's ``memory_required`` of one SD1.5 row (one frame of one chunk) at the latent grid (h, w),
    with flash / xformers attention (CUDA GPUs): h * w * dtype size * 0.01 MiB (82 MiB at 512 px in fp16)."""
    return latent_hw[0] * latent_hw[1] * element_size * 0.01 * MIB


@dataclass(frozen=True)
class GpuNeed:
    """The GPU memory (bytes) of a run that takes one way through a sampling step (`path`, described in
    words): `weights` of the UNet, `held` the features kept on the device through the step's calls (the
    recompute mode's one-step store, when its source chunk runs alone first), `rows` and `call` of the
    largest UNet call of that way (frame rows; ComfyUI's estimate plus the patches' extra), and `total`,
    what the GPU must have free for it to run without offloading weights: weights + held + 1.5 x call +
    ComfyUI's reserve."""

    path: str
    weights: int
    held: int
    rows: int
    call: int
    total: int


def step_paths(chunks: int) -> list[tuple[str, int, bool]]:
    """The ways a sampling step of `chunks` chunks (3: recompute, 2: store) can run, from the fastest:
    (description, chunks of the largest call, whether the recompute mode's source features are held on
    the device through the step). ComfyUI takes the first whose call fits 1.5x in the free memory and, when
    none does, still runs the last (one chunk per call)."""
    if chunks == 3:
        return [
            ("each step in one call", 3, False),
            ("the source chunk first, then edit and negative in one call", 2, True),
            ("the source chunk first, then one chunk per call", 1, True),
        ]
    if chunks == 2:
        return [("each step in one call", 2, False), ("one chunk per call", 1, False)]
    return [("one call per step", chunks, False)]


def gpu_needs(
    window: int, chunks: int, latent_hw: tuple[int, int], element_size: int = 2, held_per_frame: int = 0
) -> list[GpuNeed]:
    """The GPU memory of each way a step of `window` frames x `chunks` chunks can run (`step_paths`, the
    fastest first) at the latent grid `latent_hw` (512 px: 64x64), the UNet in a dtype of `element_size`
    bytes (fp16 / bf16: 2). `held_per_frame`: bytes per frame of the one-step store the recompute mode
    keeps on the device when its source chunk runs alone (``editing.preservation.store_bytes(1, 0, ...)``).
    The inversion's calls (one chunk) need no more than the last way."""
    weights = SD15_UNET_PARAMETERS * element_size
    needs = []
    for path, call_chunks, holds in step_paths(chunks):
        rows = window * call_chunks
        extra = patch_bytes(window, latent_hw, element_size, chunks == 2, call_chunks)
        call = math.ceil(rows * comfy_row_bytes(latent_hw, element_size)) + extra
        held = window * held_per_frame if holds else 0
        total = weights + held + math.ceil(COMFY_HEADROOM * call) + COMFY_RESERVE
        needs.append(GpuNeed(path, weights, held, rows, call, total))
    return needs


def gpu_need(
    window: int,
    chunks: int,
    latent_hw: tuple[int, int],
    element_size: int = 2,
    held_per_frame: int = 0,
    free: int | None = None,
) -> GpuNeed:
    """The way a step runs on a GPU with `free` bytes free (`gpu_needs`' first that fits; the last, the
    least a run needs, when none does or `free` is None: what the run cannot do without)."""
    needs = gpu_needs(window, chunks, latent_hw, element_size, held_per_frame)
    if free is None:
        return needs[-1]
    return next((need for need in needs if need.total <= free), needs[-1])


def largest_window(
    gpu_bytes: int,
    chunks: int,
    latent_hw: tuple[int, int],
    element_size: int = 2,
    held_per_frame: int = 0,
    longest: int = 256,
) -> int:
    """The largest window (1 .. `longest` frames) that runs on a GPU with `gpu_bytes` free without
    offloading weights (the least way of `gpu_needs` fits); 0 when not even one frame does."""
    fitting = [
        w
        for w in range(1, longest + 1)
        if gpu_need(w, chunks, latent_hw, element_size, held_per_frame).total <= gpu_bytes
    ]
    return max(fitting, default=0)
