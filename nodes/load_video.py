"""LoadVideo: a clip from ComfyUI's input folder (or any VIDEO), capped, thinned and sized the way face
editing needs, upright and at a constant rate.

Why not only the core LoadVideo + GetVideoComponents: those decode every frame at the file's size. An
edit needs a frame cap (memory and time grow with frames), frame skipping, and a working size whose
sides are multiples of 64 (the UNet downsamples the 1/8 latent three times and the trajectories are
built at 1/8 .. 1/64 of the image). This node does that while decoding, so a long file never fills RAM.
Phone clips are turned upright by their display matrix and variable-rate clips are taken at a constant
rate by their timestamps (video/orientation.py, video/timing.py); a clip that stops decoding before the
frames asked for is refused at validation, saying where (video/damage.py). A VIDEO input (core Load
Video, Create Video, ...) replaces the file when connected.
"""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths
from comfy_api.latest import InputImpl, io

from ..comfyhost.versions import trim_window
from ..video.damage import find_damage
from ..video.decode import (
    ANIMATED_IMAGES,
    EVERY_NTH,
    FIT,
    FRAME_RATE,
    MAX_FRAMES,
    SHORT_SIDE,
    SIZE_MULTIPLE,
    SKIP_FIRST_FRAMES,
    ClipError,
    fit_frames,
    pick_images,
    probe_clip,
    read_clip,
    size_problem,
)
from ..video.timing import Picking
from .common import CATEGORY, PREFIX, input_problem, progress

NOT_CONNECTED = object()
"""validate_inputs' default for the optional VIDEO input: absent (a linked input arrives as None)."""

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
                "Loads a clip from the input folder (or a connected VIDEO) with a frame cap, frame skipping and "
                "a working size whose sides are multiples of 64, decoding only the frames it keeps. Phone clips "
                "come out upright; variable-frame-rate clips at a constant rate by their timestamps; HDR clips "
                "(PQ, HLG) tone-mapped to SDR BT.709 (the edit works in SDR); non-square pixels made square. "
                "What was done is written to ComfyUI's log."
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
                    **MAX_FRAMES.widget(),
                    tooltip=MAX_FRAMES.tooltip(
                        "Keep at most this many frames (0 = all). Without context windows all frames are "
                        "edited in one batch, so GPU memory grows with them too."
                    ),
                ),
                io.Int.Input(
                    "skip_first_frames",
                    **SKIP_FIRST_FRAMES.widget(),
                    tooltip=SKIP_FIRST_FRAMES.tooltip("Frames to drop at the start of the file."),
                ),
                io.Int.Input(
                    "every_nth",
                    **EVERY_NTH.widget(),
                    tooltip=EVERY_NTH.tooltip(
                        "Keep every n-th frame after the skipped ones (2 halves the frame rate). The fps "
                        "output is divided accordingly so the video keeps its duration."
                    ),
                ),
                io.Int.Input(
                    "short_side",
                    **SHORT_SIDE.widget(),
                    tooltip=SHORT_SIDE.tooltip(
                        "Working size: the shorter side is scaled to this (other values are refused, not "
                        "rounded). The longer side ends up a multiple of 64 too (see fit)."
                    ),
                ),
                io.Combo.Input(
                    "fit",
                    **FIT.widget(),
                    tooltip=FIT.tooltip(
                        "crop: keep the aspect ratio and trim the longer side's edges by under 64 px in total. "
                        "stretch: keep every pixel and scale each side to the nearest multiple of 64 (the "
                        "aspect ratio changes slightly)."
                    ),
                ),
                io.Float.Input(
                    "frame_rate",
                    **FRAME_RATE.widget(),
                    optional=True,
                    force_input=True,
                    tooltip=FRAME_RATE.tooltip(
                        "Take the clip at this many frames per second, by its timestamps (frames repeat or "
                        "drop; the duration stays). Unconnected: the clip's own rate; a variable-rate phone clip "
                        "is taken at its average rate, so it lasts as long as the source and its audio stays in "
                        "sync. A socket, not a widget, so workflows saved before it keep their widget values."
                    ),
                ),
                io.Video.Input(
                    "source",
                    optional=True,
                    tooltip="Optional VIDEO (core Load Video, Create Video, ...): read instead of the file. A "
                    "file-backed VIDEO is decoded here (upright, timestamps, the core node's trim kept: skip and "
                    "cap count within it); one made of frames is picked and sized.",
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
    def validate_inputs(
        cls,
        video,
        max_frames,
        skip_first_frames,
        every_nth,
        short_side,
        fit,
        frame_rate=0.0,
        source=NOT_CONNECTED,
    ):
        """The settings are in range, the file exists, opens as a video and decodes up to the last frame
        kept. Only the inputs checked here are named: a validate_inputs taking **kwargs would make ComfyUI
        skip the min/max checks of all. With the VIDEO input connected the file is not read."""
        problem = input_problem(
            cls,
            fit=fit,
            skip_first_frames=skip_first_frames,
            every_nth=every_nth,
            frame_rate=frame_rate,
        )
        if problem is None and max_frames is not None:
            problem = MAX_FRAMES.problem(
                "max_frames", max_frames
            )  # 1 is in the widget's range (0..), not an edit's
        if problem is None and short_side is not None:
            problem = size_problem(short_side)
        if problem:
            return problem
        if video is None or source is not NOT_CONNECTED:
            return True
        if not folder_paths.exists_annotated_filepath(video):
            return f"video file not found in the input folder: {video}"
        path = Path(folder_paths.get_annotated_filepath(video))
        try:
            probe_clip(path, name=video)
            if (
                None not in (max_frames, skip_first_frames, every_nth)
                and path.suffix.lower() not in ANIMATED_IMAGES
            ):
                picking = Picking(max_frames, skip_first_frames, every_nth, frame_rate or 0.0)
                damage = find_damage(path, picking)
                if damage is not None:
                    return f"video: {damage.sentence(video, 'max_frames')}"
        except ClipError as error:
            return f"video: {error}"
        return True

    @classmethod
    def fingerprint_inputs(cls, video, source=None, **kwargs):
        if source is not None or video is None:
            return None
        return Path(folder_paths.get_annotated_filepath(video)).stat().st_mtime

    @classmethod
    def execute(
        cls, video, max_frames, skip_first_frames, every_nth, short_side, fit, frame_rate=0.0, source=None
    ) -> io.NodeOutput:
        picking = Picking(max_frames, skip_first_frames, every_nth, frame_rate)
        # a file-backed VIDEO is decoded here (orientation, timestamps, capped decoding); any other VIDEO
        # gives its frames (VideoInput.get_stream_source would encode those into a file first)
        file = source.get_stream_source() if isinstance(source, InputImpl.VideoFromFile) else None
        if source is not None and file is None:
            components = source.get_components()
            clip = pick_images(components.images, float(components.frame_rate), components.audio, picking)
        else:
            clip = read_clip(
                file if file is not None else Path(folder_paths.get_annotated_filepath(video)),
                max_frames=max_frames,
                skip_first=skip_first_frames,
                every_nth=every_nth,
                on_frame=progress(max_frames or None),
                rate=frame_rate,
                trim=trim_window(source) if file is not None else (0.0, 0.0),
            )
        frames = fit_frames(clip.frames, short_side, SIZE_MULTIPLE, fit)
        for note in clip_notes(clip):
            logging.info(
                "Load Video (DiffFERV): %s: %s", video if source is None else "the VIDEO input", note
            )
        return io.NodeOutput(frames, clip.fps, int(frames.shape[0]), clip.audio)


def clip_notes(clip) -> list[str]:
    """What the node did to a clip beyond picking and sizing: tone-mapped HDR to SDR, made its pixels
    square, turned it upright, took it at a constant rate."""
    notes = list(clip.picture)
    if not clip.orientation.identity:
        height, width = clip.frames.shape[1:3]
        notes.append(
            f"shown {clip.orientation.describe()} by its display matrix: frames turned upright ({width}x{height})"
        )
    if clip.variable_rate:
        notes.append(f"variable frame rate: taken at a constant {clip.fps:.2f} fps by the frames' timestamps")
    return notes
