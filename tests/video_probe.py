"""Reading back what the nodes wrote, independently of the pack's own reader (tests only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageSequence


@dataclass
class Probe:
    frames: np.ndarray  # uint8 [N, H, W, 3]
    fps: float
    audio_seconds: float | None  # None: no audio stream


def probe(path: Path) -> Probe:
    """Decode every frame of a video / animated image file."""
    if path.suffix in (".gif", ".webp"):
        with Image.open(path) as image:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]
            duration = image.info.get("duration", 0)
        return Probe(np.stack(frames), 1000.0 / duration if duration else 0.0, None)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    audio_seconds = None
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(audio))
            audio_seconds = samples / audio.codec_context.sample_rate
    return Probe(np.stack(frames), fps, audio_seconds)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays of the same shape."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def audio_track(path: Path) -> tuple[float, np.ndarray, int]:
    """The audio a player plays: (when its first decoded sample plays, in seconds of the file's timeline;
    the samples float32 [C, T] as decoded, with the encoder's priming already dropped where the container
    says so (an mp4 edit list, Opus's pre-skip); the sample rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
    start = float(frames[0].time)
    samples = np.concatenate([f.to_ndarray().reshape(len(f.layout.channels), -1) for f in frames], axis=1)
    return start, samples.astype(np.float32), frames[0].sample_rate
