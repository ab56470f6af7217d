"""Reading clips: the frames picked from a video or animated image (PyAV, Pillow), their rate and the audio
they cover, and fitting frames to a working size; checking a file and a size before the work starts
(`probe_clip`, `size_problem`). No ComfyUI import.

Frames are float tensors [N, H, W, C] in 0..1 (ComfyUI's IMAGE layout) on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageSequence

from ..settings import Choice, Number
from .audio import AudioSpan, read_audio
from .container import (
    ClipError,
    NoVideoStreamError,
    Source,
    decoded_frames,
    open_source,
    own_rate,
    read_timing,
    video_stream,
)
from .damage import DamagedClipError, damage_at
from .frames import FrameHook
from .orientation import UPRIGHT, Orientation, frame_orientation
from .pixels import Picture, picture_of
from .timing import MAX_RATE, Picking, constant_timing

ANIMATED_IMAGES = (".gif", ".webp")
SIZE_MULTIPLE = 64
"""Both sides of a working frame are multiples of this: the UNet downsamples the 1/8 latent three times."""
MAX_SHORT_SIDE = 2048
MAX_FRAME_CAP = 4096
MIN_EDIT_FRAMES = 2
"""A video edit (SWCFA, trajectories) needs at least this many frames."""
FIT_MODES = ("crop", "stretch")
"""How `fit_frames` reaches multiples of SIZE_MULTIPLE: trim the longer side, or scale each side."""

# Load Video's settings, declared once (read by the node's schema, the `edit` flags and their checks)
MAX_FRAMES = Number(
    16,
    MIN_EDIT_FRAMES,
    MAX_FRAME_CAP,
    off=0,
    advice="editing time grows linearly with the frames; 8-16 at 512 px for a first try",
)
"""Frames kept from the start of the clip (Load Video's max_frames, the edit's --frames); 0: all."""
SKIP_FIRST_FRAMES = Number(0, 0, 1_000_000)
"""Frames dropped at the start of the clip."""
EVERY_NTH = Number(1, 1, 100)
"""Keep every n-th frame after the skipped ones."""
SHORT_SIDE = Number(
    512,
    SIZE_MULTIPLE,
    MAX_SHORT_SIDE,
    step=SIZE_MULTIPLE,
    advice=f"a multiple of {SIZE_MULTIPLE}; SD1.5 works best at 512",
)
"""The working size's short side in pixels (Load Video's short_side, the edit's --size)."""
FIT = Choice("crop", FIT_MODES)
"""Load Video's fit (`fit_frames`' mode); the edit command keeps the shipped workflow's."""
FRAME_RATE = Number(0.0, 0.0, MAX_RATE, step=0.01)
"""The rate a clip is taken at, by its timestamps; 0: the clip's own rate."""


@dataclass(frozen=True)
class ClipInfo:
    """What `probe_clip` found: the upright size of the frames (after the display orientation), the
    constant rate the clip is taken at, and its frame count at that rate (None if not counted);
    `orientation` turns the coded frames upright; `variable_rate`: the source's frames are unevenly
    spaced (so they are taken at `fps` by their timestamps)."""

    width: int
    height: int
    fps: float
    frames: int | None
    orientation: Orientation = UPRIGHT
    variable_rate: bool = False
    duration: float | None = None  # seconds, when counted
    picture: tuple[str, ...] = ()
    """What is done to the frames' pixels (HDR tone map, non-square pixels; video/pixels.py), in words."""

    def describe(self) -> str:
        """e.g. "48 frames of 256x350 (shown turned 90 degrees clockwise: coded 350x256), variable frame
        rate: taken at a constant 14.55 fps (its average, 3.30 s)"."""
        text = f"{self.frames} frames of {self.width}x{self.height}"
        if not self.orientation.identity:
            coded = self.orientation.upright_size(self.width, self.height)
            text += f" (shown {self.orientation.describe()}: coded {coded[0]}x{coded[1]})"
        if self.variable_rate:
            text += f", variable frame rate: taken at a constant {self.fps:.2f} fps by timestamps"
            if self.duration is not None:
                text += f" ({self.duration:.2f} s, as long as the source)"
        return "; ".join([text, *self.picture])


def probe_clip(path: Path, name: str | None = None, count_up_to: int = 0, rate: float = 0.0) -> ClipInfo:
    """Open a video or animated image and decode its first frame (cheap: no other frame is decoded).
    With `count_up_to` > 0 it also reads when every frame is shown (packets, not decoded) and counts the
    frames at the rate the clip is taken at (`rate`, else its own, the average for a variable-rate
    clip), up to that many. Raises ClipError naming the file as `name` (default: its file name) when it
    is empty, unreadable or holds no frame."""
    path = Path(path)
    name = name or path.name
    size = path.stat().st_size if path.is_file() else None
    if size is None:
        raise ClipError(f"{name}: file not found")
    if size == 0:
        raise ClipError(f"{name}: the file is empty (0 bytes): export or copy it again")
    try:
        if path.suffix.lower() in ANIMATED_IMAGES:
            return _probe_animated_image(path, count_up_to)
        return _probe_video(path, name, count_up_to, rate)
    except ClipError:
        raise
    except NoVideoStreamError:
        raise ClipError(f"{name} has no video stream (is it an audio file?): give a video file") from None
    except Exception as error:  # PyAV and Pillow raise many types for a file they cannot parse
        reason = getattr(error, "strerror", None) or str(error)  # FFmpeg's reason without the path
        raise ClipError(
            f"{name} is not a readable video ({size} bytes; {reason}): check that it plays, or convert it "
            "to mp4 (h264)"
        ) from error


def _probe_video(path: Path, name: str, count_up_to: int, rate: float) -> ClipInfo:
    with open_source(path) as container:
        stream = video_stream(container)
        first = next(container.decode(stream), None)
        if first is None:
            raise ClipError(f"{name} holds no video frame: export the video again")
        orientation = frame_orientation(first)
        picture = picture_of(stream, first)
        fps = own_rate(stream)
    width, height = orientation.upright_size(*picture.size)
    notes = tuple(picture.notes())
    if count_up_to <= 0:
        return ClipInfo(width, height, rate or fps, None, orientation, picture=notes)
    timing = read_timing(path)
    picking = Picking(rate=rate)
    frames = len(picking.sources(timing, fps)) if timing is not None else 0
    clip_rate = picking.clip_rate(timing, fps) if timing is not None else fps
    duration = frames / clip_rate if timing is not None and picking.resamples(timing) else None
    variable = timing is not None and timing.variable
    return ClipInfo(
        width, height, clip_rate, min(frames, count_up_to), orientation, variable, duration, notes
    )


def _probe_animated_image(path: Path, count_up_to: int) -> ClipInfo:
    with Image.open(path) as image:
        image.load()
        frames = min(getattr(image, "n_frames", 1), count_up_to) if count_up_to > 0 else None
        return ClipInfo(image.width, image.height, 1000.0 / (image.info.get("duration") or 40), frames)


def size_problem(short_side: int, name: str = "short_side") -> str | None:
    """Why `short_side` cannot be a working size (None when it can): it must be in SHORT_SIDE's range and
    a multiple of SIZE_MULTIPLE. Nothing is rounded silently."""
    problem = SHORT_SIDE.problem(name, short_side)
    if problem:
        return problem
    if short_side % SIZE_MULTIPLE:
        below = short_side // SIZE_MULTIPLE * SIZE_MULTIPLE
        return (
            f"{name} is {short_side}, not a multiple of {SIZE_MULTIPLE} (the UNet halves the latent three "
            f"times): use {below} or {below + SIZE_MULTIPLE}"
        )
    return None


@dataclass
class Clip:
    """Frames picked from a file: IMAGE [N, H, W, 3] float (upright), their rate, the audio they cover."""

    frames: torch.Tensor
    fps: float
    audio: dict | None
    source_frames: int  # frames of the file (before picking)
    orientation: Orientation = UPRIGHT
    variable_rate: bool = False
    picture: tuple[str, ...] = ()  # what was done to the pixels (video/pixels.py), in words


def picked_frames(available: int, max_frames: int, skip_first: int = 0, every_nth: int = 1) -> int:
    """How many frames `read_clip` keeps of `available` (at the rate the clip is taken at) with these
    settings."""
    left = max(available - skip_first, 0)
    kept = -(-left // every_nth)
    return min(kept, max_frames) if max_frames else kept


def read_clip(
    path: Source,
    max_frames: int,
    skip_first: int = 0,
    every_nth: int = 1,
    on_frame: FrameHook | None = None,
    rate: float = 0.0,
    trim: tuple[float, float] = (0.0, 0.0),
) -> Clip:
    """Decode `path` (a path, or a binary file object holding a video) upright, taken at a constant
    `rate` (0: the clip's own; a variable-rate clip is taken at its average rate by its timestamps),
    skipping `skip_first` frames, then keeping every `every_nth` frame, at most `max_frames` of them
    (0 = no cap). `trim` (start, duration) in seconds (duration 0: to the end) first cuts the clip to the
    frames shown in that span (the trim window of a core VIDEO). Decoding stops once the last kept frame
    is reached, so memory is O(kept frames). The returned fps is the rate / every_nth; the audio covers
    the kept span. A file that stops decoding before that raises DamagedClipError.
    """
    name = Path(path).name if isinstance(path, (str, Path)) else "the video"
    if isinstance(path, (str, Path)) and Path(path).suffix.lower() in ANIMATED_IMAGES:
        return _read_animated_image(Path(path), max_frames, skip_first, every_nth, on_frame)
    picking = Picking(max_frames, skip_first, every_nth, rate)
    whole = read_timing(path)
    if whole is None:
        raise ClipError(f"{name} holds no video frame: export the video again")
    timing, first = whole, 0  # the frames picked from, and the index of their first in the whole clip
    if trim != (0.0, 0.0):
        trimmed = whole.trimmed(*trim)
        if trimmed is None:
            raise ClipError(
                f"{name}: no frame is shown in its trim window ({trim[0]:.3f} s for {trim[1]:.3f} s; the clip "
                f"lasts {whole.duration:.3f} s): move the trim's start into the clip"
            )
        timing, first = trimmed
    with open_source(path) as container:
        stream = video_stream(container)
        nominal = own_rate(stream)
        wanted = picking.sources(timing, nominal) + first
        if not len(wanted):
            raise ValueError(
                f"{name}: no frames left after skipping {skip_first} of {timing.frames} (lower skip_first_frames)"
            )
        kept, orientation, picture = _decode_picked(container, stream, whole, wanted, on_frame, name)
    start, end = picking.span(timing, nominal, len(kept))
    audio = read_audio(AudioSpan(path, start, end))
    fps = picking.clip_rate(timing, nominal) / every_nth
    return Clip(
        _to_image(kept), fps, audio, timing.frames, orientation, timing.variable, tuple(picture.notes())
    )


def _decode_picked(
    container, stream, timing, wanted, on_frame, name
) -> tuple[list[np.ndarray], Orientation, Picture]:
    """The upright RGB frames [H, W, 3] uint8 for each wanted clip frame index (non-decreasing; a
    repeated index repeats the frame, converted once), as `video.pixels` makes them. When the stream
    ends early the last frame repeats."""
    kept: list[np.ndarray] = []
    orientation, picture, last, position, decoded = UPRIGHT, None, None, 0, int(wanted[0]) - 1
    try:
        for index, frame in decoded_frames(container, stream, timing, int(wanted[0])):
            if picture is None:
                orientation, picture = frame_orientation(frame), picture_of(stream, frame)
            decoded = index
            if index < wanted[position]:
                continue
            last = orientation.apply(picture.rgb(frame))
            while position < len(wanted) and wanted[position] <= index:
                kept.append(last)
                position += 1
                if on_frame is not None:
                    on_frame(len(kept))
            if position == len(wanted):
                break
    except av.error.FFmpegError as error:
        damage = damage_at(decoded + 1, timing, wanted, getattr(error, "strerror", None) or str(error))
        raise DamagedClipError(damage, name, "max_frames") from None
    if last is None:
        raise ClipError(f"{name} holds no video frame: export the video again")
    kept.extend(last for _ in range(len(wanted) - position))
    return kept, orientation, picture


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a video, one at a time as uint8 RGB [H, W, 3], as coded (a file the pack wrote: no
    orientation or colour handling). Memory: one frame."""
    with av.open(str(path)) as container:
        stream = video_stream(container)
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def edited_span(path: Path, skip_first: int, frames: int, rate: float = 0.0) -> tuple[float, float]:
    """(start, end) in the clip's seconds of `frames` frames from frame `skip_first` on, taken as Load
    Video takes them (at `rate`, 0: the clip's own): where their sound lies."""
    timing = read_timing(path)
    if timing is None:
        raise ClipError(f"{Path(path).name} holds no video frame: export the video again")
    with open_source(path) as container:
        nominal = own_rate(video_stream(container))
    return Picking(skip_first=skip_first, rate=rate).span(timing, nominal, frames)


def pick_images(images: torch.Tensor, fps: float, audio: dict | None, picking: Picking) -> Clip:
    """The frames `picking` keeps of decoded IMAGE frames [N, H, W, C] shown 1 / `fps` apart (a VIDEO's
    components), with the audio of their span (AUDIO {"waveform": [B, C, T], "sample_rate"} starting with
    the first frame). Frames are indexed, not copied beyond the kept ones."""
    timing = constant_timing(int(images.shape[0]), fps)
    wanted = picking.sources(timing, fps)
    if not len(wanted):
        raise ValueError(
            f"no frames left after skipping {picking.skip_first} of {images.shape[0]} (lower skip_first_frames)"
        )
    kept = images[torch.from_numpy(wanted)]
    if audio is not None:
        start, end = picking.span(timing, fps, len(wanted))
        rate = int(audio["sample_rate"])
        waveform = audio["waveform"][..., round(start * rate) : math.ceil(end * rate)]
        audio = {"waveform": waveform, "sample_rate": rate}
    return Clip(kept.float(), picking.clip_rate(timing, fps) / picking.every_nth, audio, int(images.shape[0]))


def _read_animated_image(path, max_frames, skip_first, every_nth, on_frame) -> Clip:
    kept, durations = [], []
    with Image.open(path) as image:
        for position, frame in enumerate(ImageSequence.Iterator(image)):
            frame.load()  # webp sets a frame's duration only once it is decoded
            durations.append(frame.info.get("duration") or 40)
            index = position - skip_first
            if index < 0 or index % every_nth:
                continue
            kept.append(np.asarray(frame.convert("RGB")))
            if on_frame is not None:
                on_frame(len(kept))
            if max_frames and len(kept) >= max_frames:
                break
    if not kept:
        raise ValueError(f"{path.name}: no frames left after skipping {skip_first} (lower skip_first_frames)")
    fps = 1000.0 / (float(np.mean(durations)) * every_nth)
    return Clip(_to_image(kept), fps, None, len(durations))


def _to_image(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).float().div_(255.0)


def fit_frames(frames: torch.Tensor, short_side: int, multiple: int, mode: str) -> torch.Tensor:
    """Resize IMAGE frames [N, H, W, C] so both sides are multiples of `multiple`.

    mode "crop": scale (aspect kept) so the short side is `short_side` (a multiple of `multiple`, else
    ValueError), then trim the long side's edges (under `multiple` pixels) to a multiple. "stretch": scale
    each side to the multiple nearest its proportional size (aspect changes by under half a multiple).
    Antialiased area-like downscaling (bilinear + antialias); memory O(frames).
    """
    if short_side < multiple or short_side % multiple:
        raise ValueError(f"short_side {short_side} is not a positive multiple of {multiple}")
    _, height, width, _ = frames.shape
    (new_h, new_w), (crop_h, crop_w) = _fit(height, width, short_side, multiple, mode)
    resized = _resize(frames, new_h, new_w)
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
    return resized[:, top : top + crop_h, left : left + crop_w]


def fitted_size(height: int, width: int, short_side: int, multiple: int, mode: str) -> tuple[int, int]:
    """The (height, width) `fit_frames` gives frames of height x width."""
    return _fit(height, width, short_side, multiple, mode)[1]


def _fit(height, width, short_side, multiple, mode) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resized size, final size after the crop) of `fit_frames`."""
    short = short_side
    scale = short / min(height, width)
    if mode == "stretch":
        new_h = max(multiple, round(height * scale / multiple) * multiple)
        new_w = max(multiple, round(width * scale / multiple) * multiple)
        return (new_h, new_w), (new_h, new_w)
    new_h, new_w = max(short, round(height * scale)), max(short, round(width * scale))
    return (new_h, new_w), (new_h // multiple * multiple, new_w // multiple * multiple)


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if frames.shape[1:3] == (height, width):
        return frames
    channels_first = frames.movedim(-1, 1)
    resized = F.interpolate(
        channels_first, size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.movedim(1, -1).clamp_(0, 1)
