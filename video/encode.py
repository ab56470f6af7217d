"""Writing videos: IMAGE frames (+ AUDIO) as mp4 (h264), webm (vp9) with PyAV, gif or animated webp
with Pillow (both come with ComfyUI). No ComfyUI import.

Frames are float tensors [N, H, W, C] in 0..1 (ComfyUI's IMAGE layout) on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from ..settings import Choice, Number
from .frames import FrameHook
from .timing import MAX_RATE


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
FORMAT = Choice("mp4 (h264)", tuple(FORMATS))
"""Video Combine's format (the edit command's comes from its --output's extension)."""
QUALITY = Number(65, 0, 100, advice="65 (x264 CRF 18, vp9 CRF 22) is visually lossless for most clips")
"""Video Combine's quality: higher is better and larger."""
FILENAME_PREFIX = "DiffFERV/edit"
"""Video Combine's default file name in ComfyUI's output folder (the edit command's edited video)."""
FPS = Number(25.0, 0.01, MAX_RATE, step=0.01)
"""Video Combine's frame rate, when its fps input is not wired to the loader's."""


def format_of(path: Path) -> str | None:
    """The FORMATS entry whose extension `path` has (case-insensitive), or None."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return next((name for name, spec in FORMATS.items() if spec.extension == suffix), None)


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
    # Timestamped from 0: the encoder's priming (AAC's 1024 samples, Opus's pre-skip) then gets negative
    # timestamps, which the container records as a delay to skip (an mp4 edit list, WebM's codec delay),
    # so the first sample plays with the first video frame. Without them it is muxed as sound.
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
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
