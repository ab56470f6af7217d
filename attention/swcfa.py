"""Sliding-Window-based Cross-Frame Attention (SWCFA, DiffFERV section 3.3, equation 6).

The queries of frame i (1-based in the paper) attend to the keys and values of frames
``max(i - w//2, 1) .. min(i + w//2, m)`` of the same clip, concatenated: frames near the ends see fewer
frames (the window is clipped, not shifted and not padded with repeats). With w = 1 this is the plain
per-frame self-attention.

Frames are grouped by how many frames their window holds (at most w//2 + 1 distinct counts), and each
group is one call of the attention function over all chunks (split into pieces of query frames when its
gathered keys and values would pass the memory budget, ``memory.WORK_BYTES``), so the Python loop runs
over window sizes and pieces, never over frames or tokens; ComfyUI's optimized attention does the work
unmodified (no mask). The index tensors of the groups are built once per frame count, window and device.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..settings import Number
from .functional import AttentionFn, frames_per_chunk, sdpa_attention
from .memory import WORK_BYTES, pieces, swcfa_item_bytes

WINDOW = Number(3, 1, 15, step=2, advice="the paper uses 3")
"""Frames each frame attends to, itself included (Apply Temporal Attention's window); odd."""


def window_problem(window: int, name: str = "window") -> str | None:
    """Why `window` cannot be a SWCFA window (None when it can): it must be an odd number >= 1."""
    if not isinstance(window, int) or window < WINDOW.low or window % 2 == 0:
        return f"{name} is {window}: the SWCFA window must be an odd number >= {WINDOW.low} ({WINDOW.advice})"
    return None


def check_window(window: int) -> None:
    """A clear error unless `window` is an odd number >= 1."""
    problem = window_problem(window)
    if problem:
        raise ValueError(problem)


@lru_cache(maxsize=64)
def window_groups(
    frames: int, window: int
) -> tuple[tuple[tuple[int, ...], tuple[tuple[int, ...], ...]], ...]:
    """Frames grouped by window size: ((query frames), (key frames of each query frame)), 0-based.

    Frame i's keys are frames max(i - w//2, 0) .. min(i + w//2, frames - 1) in order.
    """
    check_window(window)
    if frames < 1:
        raise ValueError(f"SWCFA needs at least one frame, got {frames}")
    half = window // 2
    by_count: dict[int, list[int]] = {}
    for i in range(frames):
        count = min(i + half, frames - 1) - max(i - half, 0) + 1
        by_count.setdefault(count, []).append(i)
    return tuple(
        (tuple(group), tuple(tuple(range(max(i - half, 0), max(i - half, 0) + count)) for i in group))
        for count, group in sorted(by_count.items())
    )


@lru_cache(maxsize=64)
def group_indices(
    frames: int, window: int, device: torch.device
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """`window_groups` as index tensors on `device`, built once per (frames, window, device).

    Args:
        frames: the frame count F of one chunk (at least 1).
        window: the SWCFA window w, odd and >= 1.
        device: where the index tensors are made.
    Returns:
        Per group of frames whose windows hold the same number of frames, in increasing window size:
        (the group's query frames, the key frames of each of them), 0-based int64 indices on `device`.
        The tensors are cached: do not modify them.
    Shape:
        - Returns: per group ((G,), (G, n)), G query frames in the group, n frames in each of their
          windows (n <= w).
    """
    return tuple(
        (torch.tensor(rows, device=device), torch.tensor(cols, device=device))
        for rows, cols in window_groups(frames, window)
    )


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunks: int,
    window: int,
    heads: int,
    attention_fn: AttentionFn = sdpa_attention,
    max_bytes: int = WORK_BYTES,
    **attention_kwargs,
) -> torch.Tensor:
    """SWCFA over a chunked batch: each frame's queries attend to the keys and values of the frames in
    its window.

    Row c*F + f of the batch is frame f of chunk c. A frame attends only to frames of its own chunk.
    With every window holding only its own frame (w = 1 or F = 1) this is one plain `attention_fn` call.

    Memory: the output (what the plain attention returns too) plus one piece at a time: the gathered
    queries, window keys and values and the attention output of as many query frames (of every chunk)
    as fit in `max_bytes` (at least one; ``memory.swcfa_item_bytes`` each), plus what `attention_fn`
    needs for queries of N tokens against up to w*N keys (nothing quadratic with ComfyUI's flash/SDPA
    attention).

    Args:
        q: the queries, heads not split.
        k: the keys, heads not split.
        v: the values, heads not split.
        chunks: the number of chunks K in the batch; the batch size must be a multiple of it.
        window: the SWCFA window w: frames each frame attends to, itself included; odd, >= 1.
        heads: the head count H; the last dimension of q, k and v is H * D.
        attention_fn: the attention function that does the work (ComfyUI's optimized attention in the
            node, torch SDPA by default).
        max_bytes: the work-set budget of one piece, in bytes.
        attention_kwargs: extra keyword arguments passed on to `attention_fn`.
    Returns:
        The attention output, heads merged (a new tensor).
    Shape:
        - q: (K*F, N, H*D), K chunks, F frames per chunk, N tokens per frame, H heads, D head dim.
        - k: (K*F, N, H*D)
        - v: (K*F, N, H*D)
        - Returns: (K*F, N, H*D)
    """
    frames = frames_per_chunk(q.shape[0], chunks)
    groups = group_indices(frames, window, q.device)
    if len(groups) == 1 and groups[0][1].shape[1] == 1:  # every window holds only its own frame
        return attention_fn(q, k, v, heads, **attention_kwargs)

    tokens, inner = q.shape[1], q.shape[2]
    q4, k4, v4 = (x.reshape(chunks, frames, tokens, inner) for x in (q, k, v))
    out = torch.empty_like(q4)
    for rows, cols in groups:
        count, span = cols.shape
        step = pieces(count, swcfa_item_bytes(chunks, span, tokens, inner, q.element_size()), max_bytes)
        for start in range(0, count, step):
            r, c = rows[start : start + step], cols[start : start + step]
            n = c.shape[0]
            kg = k4[:, c].reshape(chunks * n, span * tokens, inner)
            vg = v4[:, c].reshape(chunks * n, span * tokens, inner)
            qg = q4[:, r].reshape(chunks * n, tokens, inner)
            out[:, r] = attention_fn(qg, kg, vg, heads, **attention_kwargs).view(chunks, n, tokens, inner)
    return out.view(chunks * frames, tokens, inner)
