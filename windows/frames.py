"""Which frames of the clip one UNet call holds.

ComfyUI's context windows (``comfy/context_windows.py``, node *Context Windows (Manual)* or *Context
Windows (DiffFERV)*) run the model on windows of frame indices, one window per call, and put the current
window in ``transformer_options["context_window"]``: an object whose ``index_list`` lists the clip frames
the batch holds, in batch order. Attention patches receive transformer_options as ``extra_options``.
Without that key, a call holds the whole clip in order.

A window is a tuple of clip frame indices (`FrameWindow`). Windows of ComfyUI's schedules are usually
runs of consecutive frames; looped schedules wrap around the clip's end (118, 119, 120, 0, 1) and strided
ones skip frames (0, 2, 4, ...). Everything here accepts any tuple.

The anchor frame. Newer ComfyUI's handler (0.33 has it, 0.8 does not) has `causal_window_fix` (on by default
in the core *Context Windows* nodes; *Context Windows (DiffFERV)* turns it off): every window that does not start at
frame 0 is run with the frame before it prepended (the window object's ``causal_anchor_index``), and the
anchor's output is dropped before the windows are fused. It is there for causal video models, whose
first latent frame of a batch is special. For DiffFERV the anchor is what it is, a real frame of the
clip just before the window: the batch holds ``(anchor, *index_list)``, and SWCFA, TTA, the feature
store and the recompute mode's source chunk treat it as one more frame of the call, so the window's
first frame sees its left neighbour as it does in the whole clip. Its output is ComfyUI's to drop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

CONTEXT_WINDOW_KEY = "context_window"
"""transformer_options key under which ComfyUI's context handler puts the current window."""
ANCHOR_ATTRIBUTE = "causal_anchor_index"
"""Attribute of ComfyUI's window object naming the anchor frame prepended to the batch (when >= 0)."""

FrameWindow = tuple[int, ...]
"""Clip frame indices of the frames a UNet call holds, in batch order."""


def call_frames(options: Mapping) -> FrameWindow | None:
    """The frames the call described by `options` (transformer_options / extra_options) holds, in batch
    order, anchor frame first when there is one; None when it holds the whole clip (no context window)."""
    window = options.get(CONTEXT_WINDOW_KEY)
    if window is None:
        return None
    frames = tuple(int(i) for i in window.index_list)
    anchor = getattr(window, ANCHOR_ATTRIBUTE, None)
    return frames if anchor is None or anchor < 0 else (int(anchor), *frames)


def anchored(window: FrameWindow, clip_frames: int) -> FrameWindow:
    """The frames a call of `window` holds when the handler prepends an anchor frame (ComfyUI's
    ``causal_window_fix``): the frame before the window's first, when the clip has one."""
    anchor = window[0] - 1
    return (anchor, *window) if 0 <= anchor < clip_frames else window


def is_whole_clip(window: FrameWindow | None, clip_frames: int) -> bool:
    """Whether `window` holds every frame of a clip of `clip_frames` frames, in order (the case that must
    give exactly what running without windows gives)."""
    return window is None or window == tuple(range(clip_frames))


def describe(window: Sequence[int] | None) -> str:
    """A short name of a window for messages: "frames 12-27", "frames 118-120, 0-1", "the whole clip"."""
    if window is None:
        return "the whole clip"
    runs: list[list[int]] = []
    for frame in window:
        if runs and frame == runs[-1][-1] + 1:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    parts = [f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs]
    if len(parts) > 6:
        parts = [*parts[:3], "...", *parts[-2:]]
    return "frames " + ", ".join(parts)
