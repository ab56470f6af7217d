"""Speed mode (IP-FaceDiff): SelectKeyframes picks every k-th frame for the full edit, PropagateKeyframeEdit
carries the edited keyframes' change to the frames between them. The work is in keyframes/."""

from __future__ import annotations

from comfy_api.latest import io

from ..flow.backends import make_backend
from ..flow.consistency import CONSISTENCY_THRESHOLD
from ..keyframes.propagation import BACKEND, propagate_edit
from ..keyframes.selection import KEYFRAME_EVERY
from ..keyframes.selection import Keyframes as KeyframeSet
from .common import CATEGORY, PREFIX, Keyframes, input_problem, progress

"""The flow backends that need no model file (flow.backends)."""


class SelectKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "SelectKeyframes",
            display_name="Select Keyframes (DiffFERV)",
            category=CATEGORY,
            description=(
                "Speed mode: keeps every k-th frame and the last. Edit those keyframes with the usual graph "
                "(trajectories, inversion, sampler, decode), then Propagate Keyframe Edit carries their change "
                "to the frames in between along the optical flow: about k times fewer UNet evaluations."
            ),
            inputs=[
                io.Image.Input("frames", tooltip="The whole clip (Load Video's frames)."),
                io.Int.Input(
                    "keyframe_every",
                    **KEYFRAME_EVERY.widget(),
                    tooltip=KEYFRAME_EVERY.tooltip(
                        "Edit every k-th frame (and the last): about k times fewer UNet evaluations; larger gaps "
                        "ask more of the flow (fast motion, occlusions). 1 edits every frame."
                    ),
                ),
            ],
            outputs=[
                io.Image.Output(
                    "keyframe_images",
                    display_name="keyframes",
                    tooltip="The keyframes, in order: give them to Compute Flow Trajectories and VAE Encode.",
                ),
                Keyframes.Output(
                    "keyframe_set",
                    display_name="keyframe set",
                    tooltip="Which frames are keyframes, for Propagate Keyframe Edit.",
                ),
            ],
        )

    @classmethod
    def execute(cls, frames, keyframe_every) -> io.NodeOutput:
        keys = KeyframeSet.every(int(frames.shape[0]), keyframe_every)
        return io.NodeOutput(frames[list(keys.indices)], keys)


class PropagateKeyframeEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "PropagateKeyframeEdit",
            display_name="Propagate Keyframe Edit (DiffFERV)",
            category=CATEGORY,
            description=(
                "Speed mode: the whole clip from its edited keyframes. Each frame between two keyframes takes "
                "their change (edited minus source), moved along the optical flow from the frame to each "
                "keyframe and weighted by time; a pixel hidden in one keyframe (occlusion check) takes the "
                "other's change. Where the edit changed nothing, the frame keeps its own pixels."
            ),
            inputs=[
                io.Image.Input("source", tooltip="The whole clip, as given to Select Keyframes."),
                io.Image.Input(
                    "edited_keyframes",
                    tooltip="The edited keyframes: VAE Decode of the sampler that edited Select Keyframes' "
                    "keyframes, in the same order.",
                ),
                Keyframes.Input("keyframe_set", tooltip="Select Keyframes' keyframe set."),
                io.Combo.Input(
                    "backend",
                    **BACKEND.widget(),
                    tooltip="Optical flow from each frame to its keyframes: OpenCV DIS (default) or Farneback.",
                ),
                io.Float.Input(
                    "consistency_threshold",
                    **CONSISTENCY_THRESHOLD.widget(),
                    tooltip=CONSISTENCY_THRESHOLD.tooltip(
                        "Forward-backward check, in pixels: where the flow to a keyframe and back misses by "
                        "more, the pixel counts as hidden in that keyframe and takes the other keyframe's change."
                    ),
                ),
            ],
            outputs=[
                io.Image.Output(
                    "frames",
                    display_name="frames",
                    tooltip="The whole edited clip (as many frames as the source): to Video Combine.",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, backend):
        return input_problem(cls, backend=backend) or True

    @classmethod
    def execute(cls, source, edited_keyframes, keyframe_set, backend, consistency_threshold) -> io.NodeOutput:
        frames = propagate_edit(
            source,
            edited_keyframes,
            keyframe_set,
            make_backend(backend),
            consistency_threshold,
            progress(int(source.shape[0])),
        )
        return io.NodeOutput(frames)
