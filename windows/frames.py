"""Which frames of the clip one UNet call holds.

ComfyUI's context windows (``comfy/context_windows.py``, node *Context Windows (Manual)* or *Context
Windows (DiffFERV)*) run the model on windows of frame indices, one window per call, and put the current
window in ``transformer_options["context_window"]``: an object whose ``index_list`` lists the clip frames
the batch holds, in batch order. Attention patches receive transformer_options as ``extra_options``.
Without that key, a call holds the whole clip in order.

A window is a tuple of clip frame indices (`FrameWindow`). Windows of ComfyUI's schedules are usually
runs of consecutive frames; looped schedules wrap around the clip's end (118, 119, 120, 0, 1) and strided
ones skip frames (0, 2, 4, ...). Everything here accepts any tuple.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

CONTEXT_WINDOW_KEY = "context_window"
"""transformer_options key under which ComfyUI's context handler puts the current window."""

FrameWindow = tuple[int, ...]
"""Clip frame indices of the frames a UNet call holds, in batch order."""


def call_frames(options: Mapping) -> FrameWindow | None:
    """The frames the call described by `options` (transformer_options / extra_options) holds, or None
    when it holds the whole clip (no context window)."""
    window = options.get(CONTEXT_WINDOW_KEY)
    if window is None:
        return None
    return tuple(int(i) for i in window.index_list)


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
