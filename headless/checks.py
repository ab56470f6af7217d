"""The `edit` command's checks before ComfyUI starts (`preflight`): every value in range, every file
there and usable (the video, the checkpoint, a specialized UNet, the workflow), every output writable,
each refused in one sentence with the flag and the user's path. The checks themselves are the pure ones of
the concepts' packages (editing.inputs, masks.inputs, video, unet.files, unet.sd15, windows.schedule);
here they are put in flag terms. The server flags are read in server_flags.py, the GPU fit in gpu_fit.py."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..editing.inputs import prompt_problem
from ..faces.dlib_models import missing_reason
from ..segments.preview import PREVIEW_FRAMES
from ..settings import Number
from ..unet.files import UNetFileError
from ..unet.sd15 import check_sd15_checkpoint, check_sd15_file
from ..video.damage import find_damage
from ..video.decode import (
    ANIMATED_IMAGES,
    FIT,
    MIN_EDIT_FRAMES,
    SIZE_MULTIPLE,
    ClipError,
    ClipInfo,
    fitted_size,
    picked_frames,
    probe_clip,
    size_problem,
)
from ..video.encode import FORMAT, format_of
from ..video.timing import FIRST_FRAME, Picking, Start
from ..windows.schedule import CONTEXT_LENGTH, overlap_problem
from .cli import InputRefusedError
from .flags import DECLARED, EXTENSIONS
from .outputs import report_path
from .plan import byte_size
from .workflow import CHECKPOINT, CHECKPOINT_URL, KEYFRAMES, SPEED_WORKFLOW, WORKFLOW

CHECKPOINT_HELP = f"""No Stable Diffusion 1.5 checkpoint was found.

The edit needs an SD1.5 checkpoint (.safetensors; any SD1.5 fine-tune works, SDXL/SD2/Flux do not).
The shipped workflow uses {CHECKPOINT} (2.1 GB):

    {CHECKPOINT_URL}

Put it in {{checkpoints}}/ or pass its path with --checkpoint /path/to/{CHECKPOINT}."""


@dataclass(frozen=True)
class Checked:
    """What the preflight found: the files (resolved), the output formats (VideoCombine format names of
    the edit and of the comparison) and the workflow to run."""

    video: Path
    checkpoint: Path
    unet: Path | None
    formats: tuple[str, str]
    workflow: dict
    workflow_path: str
    start_frame: int = 0
    """The frame the edit starts at (--start, at the rate the clip is taken at)."""
    clip: ClipInfo | None = None
    """What probing the clip found (its frames counted up to MAX_FRAME_CAP): the plan uses it, so the clip
    is probed once."""


COUNT_ALL = 10**9
"""Frames counted in the clip: all of them (a long edit takes them all; counting reads packets, not frames)."""
CHECKED_APART = ("--overlap", "--size")
"""Declared flags with a check of their own: the overlap against --window, the size also as a multiple
(`video.decode.size_problem`). (--start, a frame or a time, is checked as it is parsed,
`flags.start_flag`, and against the clip, `check_video`.)"""


def value_problems(args: argparse.Namespace) -> list[str]:
    """The command-line values outside their ranges, and empty prompts, one sentence each."""
    problems = [
        setting.declared.problem(setting.flag, value, setting.off)
        for setting in DECLARED.values()
        if isinstance(setting.declared, Number) and setting.flag not in CHECKED_APART
        for value in [getattr(args, setting.flag[2:].replace("-", "_"))]
    ]
    if args.window and CONTEXT_LENGTH.problem("--window", args.window) is None:  # the overlap goes with it
        problems.append(overlap_problem(args.window, args.overlap, "--window", "--overlap"))
    problems.append(size_problem(args.size, "--size"))
    problems.append(PREVIEW_FRAMES.problem("--preview", args.preview))
    problems += [prompt_problem("--source", args.source), prompt_problem("--edit", args.edit)]
    return [problem for problem in problems if problem]


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
    return name


def check_writable(flag: str, given: str | Path, need: int) -> None:
    """Refuses (naming `flag` and the path) an output that cannot be written: its folder is not there and
    cannot be made (a file stands in the way), no file can be created in it or its nearest existing
    parent (read-only, no permission, a virtual file system), or it has less than `need` bytes free."""
    path = Path(given).expanduser().resolve()
    if path.is_dir():
        raise InputRefusedError(f"{flag}: {path} is a folder; give a file name")
    folder = next(parent for parent in path.parents if parent.exists())
    if not folder.is_dir():
        raise InputRefusedError(f"{flag}: {path} cannot be written: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputRefusedError(
            f"{flag}: {path} cannot be written: no file can be created in {folder} ({error.strerror}); "
            "give a path in a writable folder"
        ) from None
    free = shutil.disk_usage(folder).free
    if free < need:
        raise InputRefusedError(
            f"{flag}: {path} needs about {byte_size(need)} and {folder} has {byte_size(free)} free; free some "
            "space or write it elsewhere"
        )


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


def check_video(given: str, frames: int, start: Start = FIRST_FRAME) -> tuple[Path, ClipInfo, int]:
    """The video to edit, resolved, what its probe found, and the frame the edit starts at; refuses a
    missing file, one that is no clip, one too short, a `start` that leaves too few frames, and one that
    stops decoding before the last of the `frames` the edit takes from its start (0: all), saying where
    and what to do."""
    video = Path(given).expanduser().resolve()
    if not video.is_file():
        raise InputRefusedError(f"--video: no file at {video}")
    try:
        clip = probe_clip(video, name=str(video), count_up_to=COUNT_ALL)
    except ClipError as error:
        raise InputRefusedError(f"--video: {error}") from None
    if clip.frames < MIN_EDIT_FRAMES:
        raise InputRefusedError(
            f"--video: {video} holds {clip.frames} frame; a video edit needs at least {MIN_EDIT_FRAMES}"
        )
    first = start.frame_at(clip.fps)
    if clip.frames - first < MIN_EDIT_FRAMES:
        last = clip.frames - MIN_EDIT_FRAMES
        raise InputRefusedError(
            f"--start {start.describe()} is frame {first}, too late in {video} ({clip.frames} frames, "
            f"{clip.frames / clip.fps:.2f} s at {clip.fps:.4g} fps): a video edit needs at least "
            f"{MIN_EDIT_FRAMES} frames, so start at frame {last} ({last / clip.fps:.2f} s) or earlier"
        )
    if video.suffix.lower() not in ANIMATED_IMAGES:
        damage = find_damage(video, Picking(max_frames=frames, skip_first=first))
        if damage is not None:
            raise InputRefusedError(f"--video: {damage.sentence(str(video), '--frames')}")
    return video, clip, first


def output_formats(args: argparse.Namespace, video: Path, clip: ClipInfo, first: int) -> tuple[str, str]:
    """The VideoCombine formats of --output and --compare (mp4 when there is no comparison), each output
    (and --report's JSON) checked writable with room for an estimate of its size (the frames from
    `first` on)."""
    frames = picked_frames(clip.frames, args.frames, first)
    height, width = fitted_size(clip.height, clip.width, args.size, SIZE_MULTIPLE, FIT.default)
    formats = (output_format("--output", args.output, video), FORMAT.default)
    check_writable("--output", args.output, estimated_bytes(formats[0], frames, height, width))
    if args.compare:
        formats = (formats[0], output_format("--compare", args.compare, video))
        if Path(args.compare).expanduser().resolve() == Path(args.output).expanduser().resolve():
            raise InputRefusedError("--compare: it names the same file as --output; give it another name")
        check_writable("--compare", args.compare, estimated_bytes(formats[1], frames, height, 2 * width))
    if args.report:
        check_writable("--report", report_path(args.output), 2**16)
    return formats


BYTES_PER_PIXEL = {
    "mp4 (h264)": 0.5,
    "webm (vp9)": 0.5,
    "gif": 1.0,
    "webp (animated)": 1.0,
    "mkv (ffv1, lossless)": 3.0,
}
"""A generous size of a written frame per pixel, by format (h264 at the default quality stays far below)."""


def estimated_bytes(video_format: str, frames: int, height: int, width: int) -> int:
    """About how large an output of `frames` frames of height x width gets (on the generous side)."""
    return int(BYTES_PER_PIXEL[video_format] * frames * height * width) + 2**16


def check_models(args: argparse.Namespace, comfyui: Path) -> tuple[Path, Path | None]:
    """The checkpoint and the specialized UNet (or None), each judged SD1.5 from its header alone."""
    checkpoint = find_checkpoint(args.checkpoint, comfyui)
    try:
        check_sd15_checkpoint(checkpoint, name=str(checkpoint))
    except UNetFileError as error:
        only_unet = "holds no CLIP" in str(error)
        advice = " Give a UNet-only file with --unet." if only_unet else ""
        raise InputRefusedError(f"--checkpoint: {error}{advice}") from None
    if not args.unet:
        return checkpoint, None
    unet = Path(args.unet).expanduser().resolve()
    if not unet.is_file():
        raise InputRefusedError(f"--unet: no file at {unet}")
    try:
        check_sd15_file(unet, name=str(unet))
    except UNetFileError as error:
        raise InputRefusedError(f"--unet: {error}") from None
    return checkpoint, unet


def read_workflow(args: argparse.Namespace) -> tuple[dict, str]:
    """The API-form workflow to run (--workflow, else the shipped one for the mode) and its path."""
    workflow_path = args.workflow or str(SPEED_WORKFLOW if args.keyframe_every > 1 else WORKFLOW)
    try:
        workflow = json.loads(Path(workflow_path).expanduser().read_text())
    except (OSError, ValueError) as error:
        raise InputRefusedError(
            f"--workflow: {workflow_path} is not a readable API-form workflow ({error})"
        ) from None
    if args.keyframe_every > 1 and not any(n.get("class_type") == KEYFRAMES for n in workflow.values()):
        raise InputRefusedError(
            f"--keyframe-every: the workflow {workflow_path} has no Select Keyframes (DiffFERV) node; leave "
            f"--workflow out to run the shipped speed-mode workflow ({SPEED_WORKFLOW.name})"
        )
    return workflow, workflow_path


def preflight(args: argparse.Namespace, comfyui: Path | None) -> Checked:
    """Check every value and file before ComfyUI starts. Raises InputRefusedError (all problems of the
    values; else the first problem of the files). `comfyui` None: the edit runs on a server (--server),
    which holds the models and the face models: they are checked there (server_check.py), by file name."""
    problems = value_problems(args)
    if problems:
        raise InputRefusedError("\n".join(problems))
    if comfyui is not None and args.mask != "none":
        missing = missing_reason()
        if missing:
            raise InputRefusedError(f"--mask {args.mask}: {missing}")
    video, clip, first = check_video(args.video, args.frames, args.start)
    formats = output_formats(args, video, clip, first)
    if comfyui is None:
        checkpoint = Path(args.checkpoint or CHECKPOINT)
        unet = Path(args.unet) if args.unet else None
    else:
        checkpoint, unet = check_models(args, comfyui)
    workflow, workflow_path = read_workflow(args)
    return Checked(video, checkpoint, unet, formats, workflow, workflow_path, first, clip)
