"""LoadVideo: a clip from ComfyUI's input folder, capped, thinned and sized the way face editing needs.

Why not only the core LoadVideo + GetVideoComponents: those decode every frame at the file's size. An
edit needs a frame cap (memory and time grow with frames), frame skipping, and a working size whose
sides are multiples of 64 (the UNet downsamples the 1/8 latent three times and the trajectories are
built at 1/8 .. 1/64 of the image). This node does that while decoding, so a long file never fills RAM.
"""

from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..video.decode import (
    MAX_FRAME_CAP,
    MAX_SHORT_SIDE,
    SIZE_MULTIPLE,
    ClipError,
    fit_frames,
    probe_clip,
    read_clip,
    size_problem,
)
from .common import CATEGORY, PREFIX, input_problem, progress

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif", ".webp")


def input_videos() -> list[str]:
    """Video files in ComfyUI's input folder (top level), sorted."""
    folder = Path(folder_paths.get_input_directory())
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


class LoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "LoadVideo",
            display_name="Load Video (DiffFERV)",
            category=CATEGORY,
            description=(
                "Loads a clip from the input folder with a frame cap, frame skipping and a working size whose "
                "sides are multiples of 64, decoding only the frames it keeps."
            ),
            inputs=[
                io.Combo.Input(
                    "video",
                    options=input_videos(),
                    upload=io.UploadType.video,
                    tooltip="A video in ComfyUI's input folder (mp4, webm, mov, mkv, avi, gif, animated webp). "
                    "Upload one with the button.",
                ),
                io.Int.Input(
                    "max_frames",
                    default=16,
                    min=0,
                    max=MAX_FRAME_CAP,
                    tooltip="Keep at most this many frames (0 = all). Editing time and memory grow linearly "
                    "with frames (all frames are edited in one batch); start with 8-16 at 512 px.",
                ),
                io.Int.Input(
                    "skip_first_frames",
                    default=0,
                    min=0,
                    max=1_000_000,
                    tooltip="Frames to drop at the start of the file.",
                ),
                io.Int.Input(
                    "every_nth",
                    default=1,
                    min=1,
                    max=100,
                    tooltip="Keep every n-th frame after the skipped ones (2 halves the frame rate). The fps "
                    "output is divided accordingly so the video keeps its duration.",
                ),
                io.Int.Input(
                    "short_side",
                    default=512,
                    min=SIZE_MULTIPLE,
                    max=MAX_SHORT_SIDE,
                    step=SIZE_MULTIPLE,
                    tooltip="Working size: the shorter side is scaled to this (SD1.5 works best at 512); a "
                    "multiple of 64 (other values are refused, not rounded). The longer side ends up a "
                    "multiple of 64 too (see fit).",
                ),
                io.Combo.Input(
                    "fit",
                    options=["crop", "stretch"],
                    default="crop",
                    tooltip="crop: keep the aspect ratio and trim the longer side's edges by under 64 px in "
                    "total. stretch: keep every pixel and scale each side to the nearest multiple of 64 (the "
                    "aspect ratio changes slightly).",
                ),
            ],
            outputs=[
                io.Image.Output("images", display_name="images"),
                io.Float.Output("fps", display_name="fps"),
                io.Int.Output("frame_count", display_name="frame_count"),
                io.Audio.Output("audio", display_name="audio"),
            ],
        )

    @classmethod
    def validate_inputs(cls, video, short_side, fit):
        """The file exists and opens as a video, the size is usable. Only the inputs checked here are
        named: a validate_inputs taking **kwargs would make ComfyUI skip the min/max checks of all."""
        problem = input_problem(cls, fit=fit) or (
            size_problem(short_side) if short_side is not None else None
        )
        if problem:
            return problem
        if video is None:
            return True
        if not folder_paths.exists_annotated_filepath(video):
            return f"video file not found in the input folder: {video}"
        try:
            probe_clip(Path(folder_paths.get_annotated_filepath(video)), name=video)
        except ClipError as error:
            return f"video: {error}"
        return True

    @classmethod
    def fingerprint_inputs(cls, video, **kwargs):
        return Path(folder_paths.get_annotated_filepath(video)).stat().st_mtime

    @classmethod
    def execute(cls, video, max_frames, skip_first_frames, every_nth, short_side, fit) -> io.NodeOutput:
        path = Path(folder_paths.get_annotated_filepath(video))
        clip = read_clip(
            path,
            max_frames=max_frames,
            skip_first=skip_first_frames,
            every_nth=every_nth,
            on_frame=progress(max_frames or None),
        )
        frames = fit_frames(clip.frames, short_side, SIZE_MULTIPLE, fit)
        return io.NodeOutput(frames, clip.fps, int(frames.shape[0]), clip.audio)
