"""ContextWindows: MODEL -> MODEL that samples long clips in overlapping windows of frames (ComfyUI's
core context windows with settings for face editing; see nodes/window_glue.py)."""

from __future__ import annotations

import comfy.context_windows as core
from comfy_api.latest import io

from .common import CATEGORY, PREFIX
from .window_glue import install, static_handler

DEFAULT_LENGTH = 16
DEFAULT_OVERLAP = 4
DEFAULT_FUSE = core.ContextFuseMethods.PYRAMID


class ContextWindows(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "ContextWindows",
            display_name="Context Windows (DiffFERV)",
            category=CATEGORY,
            description=(
                "Makes the inversion and the sampler run the UNet on overlapping windows of the clip's frames "
                "instead of all frames in one batch, so GPU memory stays that of one window whatever the "
                "clip's length. ComfyUI's own context windows (the same windows at every step), with face "
                "editing's defaults; the temporal attention works inside each window. Clips no longer "
                "than one window run unchanged."
            ),
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The model from Apply Temporal Attention (DiffFERV); give the output to both DDIM "
                    "Invert With Cache and Preservation Inject Sampler.",
                ),
                io.Int.Input(
                    "context_length",
                    default=DEFAULT_LENGTH,
                    min=2,
                    max=256,
                    tooltip="Frames per window: the UNet batch holds this many frames per prompt chunk "
                    "(2 chunks in sampling, 3 in the recompute cache mode). GPU memory and the span of the "
                    "trajectory attention grow with it.",
                ),
                io.Int.Input(
                    "context_overlap",
                    default=DEFAULT_OVERLAP,
                    min=0,
                    max=255,
                    tooltip="Frames shared by neighbouring windows, where their outputs are blended. Must be "
                    "smaller than context_length. More overlap: smoother seams, more UNet work "
                    "(length / (length - overlap) times the frames).",
                ),
                io.Combo.Input(
                    "fuse_method",
                    options=list(core.ContextFuseMethods.LIST_STATIC),
                    default=DEFAULT_FUSE,
                    tooltip="How overlapping windows' outputs are blended: pyramid weighs a window's middle "
                    "frames most, overlap-linear crossfades over the overlap, flat averages, relative weighs "
                    "by distance from the window's centre.",
                ),
            ],
            outputs=[
                io.Model.Output(
                    "windowed_model",
                    display_name="model",
                    tooltip="The model sampling in context windows; the input model is unchanged.",
                )
            ],
        )

    @classmethod
    def execute(cls, model, context_length, context_overlap, fuse_method) -> io.NodeOutput:
        if context_overlap >= context_length:
            raise ValueError(
                f"context_overlap ({context_overlap}) must be smaller than context_length ({context_length}): "
                "windows advance by context_length - context_overlap frames"
            )
        return io.NodeOutput(install(model, static_handler(context_length, context_overlap, fuse_method)))
