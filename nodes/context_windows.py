"""ContextWindows: MODEL -> MODEL that samples long clips in overlapping windows of frames (ComfyUI's
core context windows with settings for face editing; see nodes/window_glue.py)."""

from __future__ import annotations

import comfy.context_windows as core
from comfy_api.latest import io

from ..windows.schedule import CONTEXT_LENGTH, CONTEXT_OVERLAP, overlap_problem
from .common import CATEGORY, PREFIX
from .window_glue import install, static_handler

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
                "than one window run unchanged. Unlike the core node on newer ComfyUI, it adds no anchor frame "
                "before each window (causal_window_fix): SD1.5 treats every frame alike, so there is no causal "
                "first frame to fix, the overlap already gives each window's edge its neighbours, and the "
                "anchor would cost a frame of work and memory per window."
            ),
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The model from Apply Temporal Attention (DiffFERV); give the output to both DDIM "
                    "Invert With Cache and Preservation Inject Sampler.",
                ),
                io.Int.Input(
                    "context_length",
                    **CONTEXT_LENGTH.widget(),
                    tooltip=CONTEXT_LENGTH.tooltip(
                        "Frames per window: the UNet batch holds this many frames per prompt chunk "
                        "(2 chunks in sampling, 3 in the recompute cache mode)."
                    ),
                ),
                io.Int.Input(
                    "context_overlap",
                    **CONTEXT_OVERLAP.widget(),
                    tooltip=CONTEXT_OVERLAP.tooltip(
                        "Frames shared by neighbouring windows, where their outputs are blended "
                        "(length / (length - overlap) times the frames)."
                    ),
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
        problem = overlap_problem(context_length, context_overlap)
        if problem:
            raise ValueError(problem)
        return io.NodeOutput(install(model, static_handler(context_length, context_overlap, fuse_method)))
