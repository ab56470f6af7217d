"""ComfyUI glue of the context windows (``windows/`` holds the pure part): the handler DiffFERV runs
with, what a MODEL's windows are, and the checks that refuse settings the pack cannot run.

ComfyUI's context windows live in ``model_options["context_handler"]``: an `IndexListContextHandler`
(``comfy/context_windows.py``) that, during sampling, runs the model on windows of the latent batch's
frames and fuses their outputs. DiffFERV's nodes accept one installed by the core *Context Windows
(Manual)* node or by *Context Windows (DiffFERV)*:

- every fuse method (pyramid, relative, flat, overlap-linear) and every schedule works in the recompute
  cache mode; the store mode needs the same windows at every step (standard_static or batched: the
  uniform schedules shift their windows from step to step) and is refused otherwise;
- the windows must run over the batch dimension (dim 0), where the clip's frames are;
- the overlap must be smaller than the window (ComfyUI would loop forever or fuse nothing);
- FreeNoise (ComfyUI 0.8) shuffles the initial noise; the DiffFERV nodes start from the clip's latents
  and sample without added noise, so it changes nothing;
- `causal_window_fix` (newer ComfyUI, on by default in the core nodes) prepends the frame before each
  window to its batch: the patches treat it as one more frame of the call (``windows/frames.py``), and
  the windows, store sizes and memory estimate here count it. *Context Windows (DiffFERV)* turns it off
  (see `static_handler`).

ComfyUI 0.3.x's handler looks the step up by comparing the whole sigma batch with the schedule, which
fails for any batch of more than one frame; `FrameWindowsHandler` compares one sigma (as ComfyUI 0.4+
does), and `prepare_windows` swaps a core handler for it on a clone of the MODEL (the user's MODEL is
not touched). Nothing else of ComfyUI's handler changes.
"""

from __future__ import annotations

import comfy.context_windows as core

from ..windows.frames import FrameWindow, anchored
from ..windows.schedule import check_window_settings

FRAME_DIM = 0
"""The latent batch's frame dimension (SD1.5 video latents are [frames, 4, h, w])."""
STEADY_SCHEDULES = (core.ContextSchedules.STATIC_STANDARD, core.ContextSchedules.BATCHED)
"""Schedules whose windows are the same at every step (what the store cache mode needs)."""


class FrameWindowsHandler(core.IndexListContextHandler):
    """ComfyUI's IndexListContextHandler whose step lookup reads one sigma of the batch. Recognised by
    its `diffferv_frame_windows` marker, not its class: the pack can be imported under more than one
    module name (see attention/patches.py)."""

    diffferv_frame_windows = True

    def set_step(self, timestep, model_options):
        super().set_step(timestep[:1], model_options)


def static_handler(length: int, overlap: int, fuse_method: str) -> FrameWindowsHandler:
    """Context windows of `length` frames overlapping by `overlap`, the standard_static schedule (the same
    windows at every step), outputs fused with `fuse_method`, over the frame dimension."""
    check_window_settings(length, overlap)
    handler = FrameWindowsHandler(
        context_schedule=core.get_matching_context_schedule(core.ContextSchedules.STATIC_STANDARD),
        fuse_method=core.get_matching_fuse_method(fuse_method),
        context_length=length,
        context_overlap=overlap,
        dim=FRAME_DIM,
    )
    # No anchor frame (newer ComfyUI's causal_window_fix; an unused attribute on older ones): SD1.5 makes
    # every frame alike, so there is no causal first frame to fix, and the windows' overlap already gives
    # each window's edge its neighbours; the anchor would cost a frame of work and memory per window.
    handler.causal_window_fix = False
    return handler


def install(model, handler: core.IndexListContextHandler):
    """A clone of `model` that samples in `handler`'s windows (ComfyUI's memory estimate then counts one
    window, as the core node arranges it)."""
    windowed = model.clone()
    windowed.model_options["context_handler"] = handler
    core.create_prepare_sampling_wrapper(windowed)
    return windowed


def handler_of(model) -> core.IndexListContextHandler | None:
    """The MODEL's context handler, checked (see the module docstring), or None."""
    handler = model.model_options.get("context_handler")
    if handler is None:
        return None
    if not isinstance(handler, core.IndexListContextHandler):
        raise ValueError(
            f"model: its context handler {type(handler).__name__} is not ComfyUI's index-list context windows; "
            "DiffFERV runs with Context Windows (DiffFERV) or the core Context Windows (Manual) node: remove "
            "the other one from the MODEL's chain"
        )
    if handler.dim != FRAME_DIM:
        raise ValueError(
            f"model: its context windows run over dimension {handler.dim}, but DiffFERV's frames are the "
            f"latent batch, dimension {FRAME_DIM}: set dim to 0 in Context Windows (Manual), or use Context "
            "Windows (DiffFERV)"
        )
    try:
        check_window_settings(handler.context_length, handler.context_overlap)
    except ValueError as error:
        raise ValueError(f"model: {error}; change it in the context windows node") from None
    return handler


def prepare_windows(model):
    """`model` as DiffFERV runs it: itself without context windows, else (after the checks of
    `handler_of`) a clone whose core handler is a FrameWindowsHandler with the same settings."""
    handler = handler_of(model)
    if handler is None or getattr(handler, "diffferv_frame_windows", False):
        return model
    adopted = FrameWindowsHandler.__new__(FrameWindowsHandler)
    adopted.__dict__.update(handler.__dict__)
    clone = model.clone()
    clone.model_options["context_handler"] = adopted
    return clone


def anchors(handler: core.IndexListContextHandler) -> bool:
    """Whether `handler` prepends an anchor frame to windows (newer ComfyUI's causal_window_fix)."""
    return bool(getattr(handler, "causal_window_fix", False))


def windows_of(model, frames: int) -> list[FrameWindow]:
    """The frames of each UNet call one step of sampling `frames` frames makes with this MODEL: one
    window of all frames without context windows, or when the clip fits in one; else each window, with
    its anchor frame first where the handler adds one. For schedules that shift from step to step, those
    of the handler's current step."""
    handler = handler_of(model)
    if handler is None or frames <= handler.context_length:
        return [tuple(range(frames))]
    windows = [tuple(int(i) for i in window) for window in handler.context_schedule.func(frames, handler, {})]
    return [anchored(window, frames) for window in windows] if anchors(handler) else windows


def call_length(handler: core.IndexListContextHandler | None, frames: int) -> int:
    """The most frames one UNet call holds when sampling `frames` frames with `handler` (None: no
    context windows): the window, and its anchor frame where the handler adds one."""
    if handler is None or frames <= handler.context_length:
        return frames
    return handler.context_length + anchors(handler)


def steady_windows(model, frames: int) -> bool:
    """Whether every step evaluates the same windows (no context windows, a clip that fits one window,
    or a steady schedule)."""
    handler = handler_of(model)
    return (
        handler is None
        or frames <= handler.context_length
        or handler.context_schedule.name in STEADY_SCHEDULES
    )


def schedule_name(model) -> str | None:
    handler = handler_of(model)
    return None if handler is None else handler.context_schedule.name
