"""Reading clips and writing videos (PyAV for mp4/webm, Pillow for gif/webp; both come with ComfyUI).

No ComfyUI import: the node modules call these with their progress and interrupt hooks.
Frames are float tensors [N, H, W, C] in 0..1 (ComfyUI's IMAGE layout) on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageSequence

FrameHook = Callable[[int], None]
"""Called after each frame with the count so far (progress, interruption)."""


@dataclass(frozen=True)
class VideoFormat:
    """One output format of VideoCombine."""

    extension: str
    codec: str | None  # PyAV video codec; None: written with Pillow
    pixel_format: str | None
    audio_codec: str | None
    even_size: bool  # the codec's 4:2:0 chroma needs even width and height


FORMATS: dict[str, VideoFormat] = {
    "mp4 (h264)": VideoFormat("mp4", "libx264", "yuv420p", "aac", True),
    "webm (vp9)": VideoFormat("webm", "libvpx-vp9", "yuv420p", "libopus", True),
    "gif": VideoFormat("gif", None, None, None, False),
    "webp (animated)": VideoFormat("webp", None, None, None, False),
}


def to_uint8_rgb(frames: torch.Tensor) -> np.ndarray:
    """IMAGE [N, H, W, C] float (C = 1, 3 or 4) -> uint8 RGB array [N, H, W, 3]; alpha is dropped."""
    if frames.shape[-1] == 1:
        frames = frames.expand(*frames.shape[:-1], 3)
    frames = frames[..., :3]
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Repeat the last row / column where height / width is odd, so 4:2:0 codecs accept the frames
    without losing a pixel of content. [N, H, W, 3] -> [N, H + H % 2, W + W % 2, 3]."""
    _, height, width, _ = frames.shape
    if height % 2 == 0 and width % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def write_video(
    path: Path,
    frames: torch.Tensor,
    fps: float,
    video_format: VideoFormat,
    quality: int,
    audio: dict | None = None,
    metadata: dict[str, str] | None = None,
    on_frame: FrameHook | None = None,
) -> None:
    """Encode IMAGE frames [N, H, W, C] to `path`.

    quality: 0..100, higher is better (mapped to x264/vp9 CRF, webp quality, gif ignores it).
    audio: ComfyUI AUDIO {"waveform": [B, C, T], "sample_rate": int}; muxed for mp4/webm, cut to the
    video's duration. Memory: one uint8 copy of the frames.
    """
    pixels = to_uint8_rgb(frames)
    if video_format.codec is None:
        _write_animated_image(path, pixels, fps, video_format, quality, on_frame)
        return
    if video_format.even_size:
        pixels = pad_to_even(pixels)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        for key, value in (metadata or {}).items():
            container.metadata[key] = value
        stream = container.add_stream(video_format.codec, rate=rate)
        stream.width, stream.height = pixels.shape[2], pixels.shape[1]
        stream.pix_fmt = video_format.pixel_format
        crf = round(51 - 0.51 * quality) if video_format.codec == "libx264" else round(63 - 0.63 * quality)
        stream.options = {"crf": str(crf)}
        if video_format.codec == "libvpx-vp9":
            stream.bit_rate = 0
        audio_stream = None
        if audio is not None and video_format.audio_codec is not None:
            sample_rate = int(audio["sample_rate"])
            channels = int(audio["waveform"].shape[1])
            if video_format.audio_codec == "libopus":
                sample_rate = 48000  # the encoder's resampler converts; opus takes no 44.1 kHz
            audio_stream = container.add_stream(video_format.audio_codec, rate=sample_rate)
            audio_stream.layout = "mono" if channels == 1 else "stereo"
        for index, image in enumerate(pixels):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
            if on_frame is not None:
                on_frame(index + 1)
        container.mux(stream.encode())
        if audio_stream is not None:
            _mux_audio(container, audio_stream, audio, duration=len(pixels) / float(rate))


def _mux_audio(container, stream, audio: dict, duration: float) -> None:
    """Encode the first clip of an AUDIO batch, cut to `duration` seconds, into `stream`."""
    sample_rate = int(audio["sample_rate"])
    waveform = audio["waveform"][0].detach().float().cpu()  # [C, T]
    waveform = waveform[: 2 if waveform.shape[0] > 1 else 1, : round(duration * sample_rate)]
    interleaved = waveform.T.reshape(1, -1)  # packed "flt" holds the channels' samples interleaved
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(interleaved.numpy()),
        format="flt",
        layout="mono" if waveform.shape[0] == 1 else "stereo",
    )
    frame.sample_rate = sample_rate
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _write_animated_image(
    path: Path, pixels: np.ndarray, fps: float, video_format: VideoFormat, quality: int, on_frame
) -> None:
    images = []
    for index, image in enumerate(pixels):
        images.append(Image.fromarray(image))
        if on_frame is not None:
            on_frame(index + 1)
    duration_ms = max(1, round(1000.0 / fps))
    options = {"save_all": True, "append_images": images[1:], "duration": duration_ms, "loop": 0}
    if video_format.extension == "webp":
        options.update(quality=quality, lossless=quality >= 100, method=4)
    else:
        options.update(optimize=False, disposal=1)
    images[0].save(str(path), format=video_format.extension.upper(), **options)


# --------------------------------------------------------------------------------------------------
# Reading


@dataclass
class Clip:
    """Frames picked from a file: IMAGE [N, H, W, 3] float, their rate, the audio they cover."""

    frames: torch.Tensor
    fps: float
    audio: dict | None
    source_frames: int  # frames decoded from the file (before picking)


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
    if path.suffix.lower() in (".gif", ".webp"):
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

    mode "crop": scale (aspect kept) so the short side is `short_side` rounded to `multiple`, then trim
    the long side's edges (under `multiple` pixels) to a multiple. "stretch": scale each side to the
    multiple nearest its proportional size (aspect changes by under half a multiple).
    Antialiased area-like downscaling (bilinear + antialias); memory O(frames).
    """
    _, height, width, _ = frames.shape
    short = max(multiple, round(short_side / multiple) * multiple)
    scale = short / min(height, width)
    if mode == "stretch":
        new_h = max(multiple, round(height * scale / multiple) * multiple)
        new_w = max(multiple, round(width * scale / multiple) * multiple)
        return _resize(frames, new_h, new_w)
    new_h, new_w = max(short, round(height * scale)), max(short, round(width * scale))
    resized = _resize(frames, new_h, new_w)
    crop_h, crop_w = new_h // multiple * multiple, new_w // multiple * multiple
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
    return resized[:, top : top + crop_h, left : left + crop_w]


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if frames.shape[1:3] == (height, width):
        return frames
    channels_first = frames.movedim(-1, 1)
    resized = F.interpolate(
        channels_first, size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.movedim(1, -1).clamp_(0, 1)
