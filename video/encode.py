"""Writing videos: IMAGE frames (+ AUDIO) as mp4 (h264), webm (vp9) or mkv (ffv1, lossless: exact RGB) with
PyAV, a frame at a time (`VideoWriter`), or as gif or animated webp with Pillow (both come with ComfyUI).
No ComfyUI import.

Frames are float tensors [N, H, W, C] in 0..1 (ComfyUI's IMAGE layout) on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    "mkv (ffv1, lossless)": VideoFormat("mkv", "ffv1", "bgr0", "flac", False),
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
    audio: ComfyUI AUDIO {"waveform": [B, C, T], "sample_rate": int}; muxed for mp4/webm/mkv, cut to the
    video's duration. Memory: one uint8 copy of the frames.
    """
    pixels = to_uint8_rgb(frames)
    if video_format.codec is None:
        _write_animated_image(path, pixels, fps, video_format, quality, on_frame)
        return
    sound = None
    if audio is not None:
        waveform = audio["waveform"][0].detach().float().cpu()  # [C, T]
        sound = Sound(int(audio["sample_rate"]), int(waveform.shape[0]), [waveform.numpy()])
    with VideoWriter(path, fps, video_format, quality, metadata, sound) as writer:
        for index, image in enumerate(pixels):
            writer.write(image)
            if on_frame is not None:
                on_frame(index + 1)


@dataclass
class Sound:
    """Audio to mux with a video: its sample rate, channel count, and its samples as float32 arrays
    [C, T] in order (any iterable: a long clip's sound is read while it is muxed)."""

    rate: int
    channels: int
    chunks: Iterable[np.ndarray]


class VideoWriter:
    """Frames encoded to a video file as they come (mp4, webm, mkv: the PyAV formats), the audio muxed when
    it closes, cut to the video's duration. Memory: one frame (and one audio chunk), whatever the length.

        with VideoWriter(path, fps, FORMATS["mp4 (h264)"], 65, sound=Sound(...)) as writer:
            writer.write(frame)  # uint8 [H, W, 3], the same size each time

    An exception inside the block leaves the file unfinished (the caller removes it)."""

    def __init__(
        self,
        path: Path,
        fps: float,
        video_format: VideoFormat,
        quality: int,
        metadata: dict[str, str] | None = None,
        sound: Sound | None = None,
    ):
        if video_format.codec is None:
            raise ValueError(f"{video_format.extension} is written whole (Pillow), not a frame at a time")
        self.format = video_format
        self.quality = quality
        self.rate = Fraction(fps).limit_denominator(1001)
        self.sound = sound if video_format.audio_codec is not None else None
        self.frames = 0
        self.container = av.open(str(path), mode="w")
        for key, value in (metadata or {}).items():
            self.container.metadata[key] = value
        self.stream = None
        self.audio_stream = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                self.finish()
        finally:
            self.container.close()

    def write(self, image: np.ndarray) -> None:
        """Encode one frame, uint8 RGB [H, W, 3] (padded to even sides where the codec needs them)."""
        if self.format.even_size:
            image = pad_to_even(image[None])[0]
        if self.stream is None:
            self.stream = self._video_stream(image.shape[1], image.shape[0])
            if self.sound is not None:
                self.audio_stream = add_audio_stream(self.container, self.format, self.sound)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def finish(self) -> None:
        """Flush the encoder and mux the audio, cut to the frames' duration."""
        if self.stream is None:
            raise ValueError("no frame was written")
        self.container.mux(self.stream.encode())
        if self.audio_stream is not None:
            mux_audio(self.container, self.audio_stream, self.sound, self.frames / float(self.rate))

    def _video_stream(self, width: int, height: int):
        stream = self.container.add_stream(self.format.codec, rate=self.rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = self.format.pixel_format
        if self.format.codec == "libx264":
            stream.options = {"crf": str(round(51 - 0.51 * self.quality))}
        elif self.format.codec == "libvpx-vp9":
            stream.options = {"crf": str(round(63 - 0.63 * self.quality))}
            stream.bit_rate = 0
        return stream


def add_audio_stream(container, video_format: VideoFormat, sound: Sound):
    """The format's audio stream for `sound` (mono, or stereo from the first two channels)."""
    rate = 48000 if video_format.audio_codec == "libopus" else sound.rate  # opus takes no 44.1 kHz
    stream = container.add_stream(video_format.audio_codec, rate=rate)  # the encoder's resampler converts
    stream.layout = "mono" if sound.channels == 1 else "stereo"
    return stream


def mux_audio(container, stream, sound: Sound, duration: float) -> None:
    """Encode `sound`'s samples, cut to `duration` seconds, into `stream`, a chunk at a time."""
    wanted, done = round(duration * sound.rate), 0
    layout = "mono" if sound.channels == 1 else "stereo"
    for chunk in sound.chunks:
        chunk = chunk[: 2 if chunk.shape[0] > 1 else 1, : wanted - done]
        if chunk.shape[1] == 0:
            break
        interleaved = np.ascontiguousarray(chunk.T.reshape(1, -1), dtype=np.float32)  # packed "flt"
        frame = av.AudioFrame.from_ndarray(interleaved, format="flt", layout=layout)
        frame.sample_rate = sound.rate
        # Timestamped from 0: the encoder's priming (AAC's 1024 samples, Opus's pre-skip) then gets negative
        # timestamps, which the container records as a delay to skip (an mp4 edit list, WebM's codec delay),
        # so the first sample plays with the first video frame. Without them it is muxed as sound.
        frame.pts = done
        frame.time_base = Fraction(1, sound.rate)
        container.mux(stream.encode(frame))
        done += chunk.shape[1]
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
