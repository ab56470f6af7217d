"""Reading clips: the frames picked from a video or animated image (PyAV, Pillow), their rate and the audio
they cover, and fitting frames to a working size; checking a file and a size before the work starts
(`probe_clip`, `size_problem`). No ComfyUI import.

Frames are float tensors [N, H, W, C] in 0..1 (ComfyUI's IMAGE layout) on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageSequence

from .frames import FrameHook

ANIMATED_IMAGES = (".gif", ".webp")
SIZE_MULTIPLE = 64
"""Both sides of a working frame are multiples of this: the UNet downsamples the 1/8 latent three times."""
MAX_SHORT_SIDE = 2048
MAX_FRAME_CAP = 4096
MIN_EDIT_FRAMES = 2
"""A video edit (SWCFA, trajectories) needs at least this many frames."""


class ClipError(ValueError):
    """A video file that cannot be read: the message names the file, what was found and what to do."""


@dataclass(frozen=True)
class ClipInfo:
    """What `probe_clip` found: the first frame's size, the rate, and the frame count (None if not
    counted)."""

    width: int
    height: int
    fps: float
    frames: int | None


def probe_clip(path: Path, name: str | None = None, count_up_to: int = 0) -> ClipInfo:
    """Open a video or animated image and decode its first frame (cheap: no other frame is decoded).
    With `count_up_to` > 0 it also counts the frames, up to that many, from the container's frame
    count or else by reading packets (no decoding). Raises ClipError naming the file as `name`
    (default: its file name) when it is empty, unreadable or holds no frame."""
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
        return _probe_video(path, name, count_up_to)
    except ClipError:
        raise
    except Exception as error:  # PyAV and Pillow raise many types for a file they cannot parse
        reason = getattr(error, "strerror", None) or str(error)  # FFmpeg's reason without the path
        raise ClipError(
            f"{name} is not a readable video ({size} bytes; {reason}): check that it plays, or convert it "
            "to mp4 (h264)"
        ) from error


def _probe_video(path: Path, name: str, count_up_to: int) -> ClipInfo:
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ClipError(f"{name} has no video stream (is it an audio file?): give a video file")
        stream = container.streams.video[0]
        first = next(container.decode(stream), None)
        if first is None:
            raise ClipError(f"{name} holds no video frame: export the video again")
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        listed = stream.frames
    frames = None
    if count_up_to > 0:
        frames = min(listed, count_up_to) if listed else _count_packets(path, count_up_to)
    return ClipInfo(first.width, first.height, fps, frames)


def _count_packets(path: Path, up_to: int) -> int:
    """Video packets (one frame each) in the file, up to `up_to`; reads, does not decode."""
    count = 0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            count += packet.size > 0
            if count >= up_to:
                break
    return count


def _probe_animated_image(path: Path, count_up_to: int) -> ClipInfo:
    with Image.open(path) as image:
        image.load()
        frames = min(getattr(image, "n_frames", 1), count_up_to) if count_up_to > 0 else None
        return ClipInfo(image.width, image.height, 1000.0 / (image.info.get("duration") or 40), frames)


def size_problem(short_side: int, name: str = "short_side") -> str | None:
    """Why `short_side` cannot be a working size (None when it can): it must be a multiple of
    SIZE_MULTIPLE from SIZE_MULTIPLE to MAX_SHORT_SIDE. Nothing is rounded silently."""
    if short_side < SIZE_MULTIPLE or short_side > MAX_SHORT_SIDE:
        return f"{name} is {short_side}; use a multiple of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SHORT_SIDE}"
    if short_side % SIZE_MULTIPLE:
        below = short_side // SIZE_MULTIPLE * SIZE_MULTIPLE
        return (
            f"{name} is {short_side}, not a multiple of {SIZE_MULTIPLE} (the UNet halves the latent three "
            f"times): use {below} or {below + SIZE_MULTIPLE}"
        )
    return None


@dataclass
class Clip:
    """Frames picked from a file: IMAGE [N, H, W, 3] float, their rate, the audio they cover."""

    frames: torch.Tensor
    fps: float
    audio: dict | None
    source_frames: int  # frames decoded from the file (before picking)


def picked_frames(available: int, max_frames: int, skip_first: int = 0, every_nth: int = 1) -> int:
    """How many frames `read_clip` keeps of `available` with these settings."""
    left = max(available - skip_first, 0)
    kept = -(-left // every_nth)
    return min(kept, max_frames) if max_frames else kept


def read_clip(
    path: Path,
    max_frames: int,
    skip_first: int = 0,
    every_nth: int = 1,
    on_frame: FrameHook | None = None,
) -> Clip:
    """Decode `path`, skipping `skip_first` frames, then keeping every `every_nth` frame, at most
    `max_frames` of them (0 = no cap). Decoding stops once the cap is reached, so memory is
    O(kept frames). The returned fps is the source rate / every_nth; the audio covers the kept span.
    """
    if path.suffix.lower() in ANIMATED_IMAGES:
        return _read_animated_image(path, max_frames, skip_first, every_nth, on_frame)
    kept: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_fps = float(stream.average_rate or stream.guessed_rate or 25)
        decoded = 0
        for frame in container.decode(stream):
            position = decoded - skip_first
            decoded += 1
            if position < 0 or position % every_nth:
                continue
            kept.append(frame.to_ndarray(format="rgb24"))
            if on_frame is not None:
                on_frame(len(kept))
            if max_frames and len(kept) >= max_frames:
                break
    if not kept:
        raise ValueError(
            f"{path.name}: no frames left after skipping {skip_first} of {decoded} (lower skip_first_frames)"
        )
    fps = source_fps / every_nth
    start = skip_first / source_fps
    audio = _read_audio(path, start, start + len(kept) * every_nth / source_fps)
    return Clip(_to_image(kept), fps, audio, decoded)


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


def _read_audio(path: Path, start: float, end: float) -> dict | None:
    """The audio between `start` and `end` seconds as AUDIO {"waveform": [1, C, T], "sample_rate"},
    or None when the file has no audio stream."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        sample_rate = stream.codec_context.sample_rate
        chunks = [
            frame.to_ndarray().reshape(frame.layout.nb_channels, -1)
            if frame.format.is_planar
            else frame.to_ndarray().reshape(-1, frame.layout.nb_channels).T
            for frame in container.decode(stream)
        ]
    if not chunks:
        return None
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1)).float()
    if not np.issubdtype(chunks[0].dtype, np.floating):
        waveform /= float(np.iinfo(chunks[0].dtype).max)
    waveform = waveform[:, int(start * sample_rate) : math.ceil(end * sample_rate)]
    return {"waveform": waveform.unsqueeze(0), "sample_rate": sample_rate}


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
