"""The face-edit workflow the `edit` command runs: where the shipped API-form workflows are, the node
classes it sets, and the workflow with the command's values put into those nodes' inputs
(`prepare_prompt`), including the nodes it adds (a specialized UNet loader, a face mask) or takes out
(the context windows, for one batch)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..comfyhost.host import PACK_ROOT
from ..editing.inputs import CACHE_MODE, EDIT_PROMPT, GUIDANCE, SOURCE_PROMPT, STEPS, TAU_APP
from ..masks.inputs import FACE_INDEX, FEATHER_PX, GROW_PX, PICK
from ..video.decode import SHORT_SIDE
from ..video.encode import FILENAME_PREFIX, FORMAT
from .graph import ApiGraph, link

WORKFLOW = PACK_ROOT / "workflows" / "api" / "diffferv_long_clip.json"
SPEED_WORKFLOW = PACK_ROOT / "workflows" / "api" / "diffferv_speed_mode.json"
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
"""The SD1.5 checkpoint the shipped workflows load."""
CHECKPOINT_URL = "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/" + CHECKPOINT

LOAD_VIDEO = "DiffFERV_LoadVideo"
CHECKPOINT_LOADER = "CheckpointLoaderSimple"
UNET_LOADER = "DiffFERV_LoadSpecializedUNet"
TEMPORAL = "DiffFERV_ApplyTemporalAttention"
TRAJECTORIES = "DiffFERV_ComputeFlowTrajectories"
WINDOWS = "DiffFERV_ContextWindows"
KEYFRAMES = "DiffFERV_SelectKeyframes"
PROPAGATE = "DiffFERV_PropagateKeyframeEdit"
FACE_MASK = "DiffFERV_FaceMask"
INVERT = "DiffFERV_DDIMInvertWithCache"
SAMPLER = "DiffFERV_PreservationInjectSampler"
VIDEO_COMBINE = "DiffFERV_VideoCombine"
EDIT_REPORT = "DiffFERV_EditReport"

EDIT_PREFIX = FILENAME_PREFIX
"""The filename prefix of the edited video's Video Combine (the comparison's adds `_compare`)."""


@dataclass(frozen=True)
class FaceMaskSettings:
    """The edit confined to one face: Face Mask (DiffFERV)'s inputs and the sampler's feather."""

    region: str
    face_index: int = FACE_INDEX.default
    pick: str = PICK.default
    grow_px: int = GROW_PX.default
    feather_px: int = FEATHER_PX.default


def prepare_prompt(
    workflow: dict,
    *,
    video: str,
    checkpoint: str,
    frames: int,
    start: int = 0,
    source: str = SOURCE_PROMPT,
    edit: str = EDIT_PROMPT,
    size: int = SHORT_SIDE.default,
    steps: int = STEPS.default,
    tau_app: float = TAU_APP.default,
    guidance: float = GUIDANCE.default,
    cache_mode: str = CACHE_MODE.default,
    unet: str | None = None,
    prefix: str = EDIT_PREFIX,
    formats: tuple[str, str] = (FORMAT.default, FORMAT.default),
    window: int | None = None,
    overlap: int | None = None,
    keyframe_every: int | None = None,
    face_mask: FaceMaskSettings | None = None,
) -> dict:
    """The API-form face-edit workflow with its inputs set (a value not given: the setting's declared
    default); the clip is read from its frame `start` on. `unet`: a specialized UNet file name in the
    diffusion_models folder, loaded onto the checkpoint's MODEL (the shipped graph has that node
    bypassed, so its API form lacks it: it is added and wired in). `formats`: the VideoCombine formats
    (FORMATS keys) of the edit and of the comparison. `window`, `overlap`: the workflow's Context
    Windows (DiffFERV) node's settings, if it has one; window 0 takes the node out (one batch).
    `keyframe_every`: the Select Keyframes (DiffFERV) node's gap (speed mode). `face_mask`: confine the
    edit to one face (`set_face_mask`)."""
    prompt = copy.deepcopy(workflow)
    graph = ApiGraph(prompt)
    if window is not None:
        set_windows(graph, window, overlap)
    if keyframe_every is not None:
        graph.inputs(KEYFRAMES)["keyframe_every"] = keyframe_every
    graph.inputs(CHECKPOINT_LOADER)["ckpt_name"] = checkpoint
    graph.inputs(LOAD_VIDEO).update(video=video, max_frames=frames, skip_first_frames=start, short_side=size)
    graph.inputs(INVERT).update(source_prompt=source, steps=steps, cache_mode=cache_mode)
    graph.inputs(SAMPLER).update(edit_prompt=edit, tau_app=tau_app, guidance=guidance)
    edit_video, compare_video = sorted(
        (prompt[key]["inputs"] for key in graph.ids(VIDEO_COMBINE)), key=lambda i: len(i["filename_prefix"])
    )
    edit_video.update(filename_prefix=prefix, format=formats[0])
    compare_video.update(filename_prefix=prefix + "_compare", format=formats[1])
    if unet is not None:
        temporal = graph.inputs(TEMPORAL)
        loader = graph.add(
            UNET_LOADER, "Load Specialized UNet (DiffFERV)", unet_name=unet, model=temporal["model"]
        )
        temporal["model"] = link(loader)
    if face_mask is not None:
        set_face_mask(graph, face_mask)
    return prompt


def set_face_mask(graph: ApiGraph, settings: FaceMaskSettings) -> None:
    """Set the workflow's Face Mask (DiffFERV) node, or add one on the frames the edit encodes (Load
    Video's, or in speed mode Select Keyframes' keyframes), and connect its mask to the sampler's mask
    input with the feather."""
    key = graph.find(FACE_MASK)
    if key is None:
        frames = list(graph.inputs("VAEEncode")["pixels"])
        key = graph.add(FACE_MASK, "Face Mask (DiffFERV)", frames=frames)
    graph.prompt[key]["inputs"].update(
        region=settings.region, face_index=settings.face_index, pick=settings.pick, grow_px=settings.grow_px
    )
    graph.inputs(SAMPLER).update(mask=link(key), mask_feather_px=settings.feather_px)


def set_windows(graph: ApiGraph, window: int, overlap: int | None) -> None:
    """Set the Context Windows (DiffFERV) node's window (and overlap), or, for window 0, remove it and
    connect its consumers to its input MODEL. A workflow without the node is left as it is."""
    key = graph.find(WINDOWS)
    if key is None:
        return
    inputs = graph.prompt[key]["inputs"]
    if window:
        inputs["context_length"] = window
        if overlap is not None:
            inputs["context_overlap"] = overlap
        return
    graph.remove(key, inputs["model"])
