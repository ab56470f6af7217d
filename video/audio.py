"""A file's audio between two times of its clock, decoded a frame at a time (`audio_span`): memory is one
decoded audio frame however long the span, so a long clip's sound can be muxed while it is read
(`video.join`), and a short span is gathered into ComfyUI's AUDIO (`read_audio`). No ComfyUI import."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .container import Source, open_source


@dataclass(frozen=True)
class AudioSpan:
    """The audio of `source` from `start` to `end` seconds of its clock (the video's timestamps)."""

    source: Source
    start: float
    end: float


def audio_format(source: Source) -> tuple[int, int] | None:
    """The sample rate and channel count of the file's first audio stream; None when it has none."""
    with open_source(source) as container:
        streams = container.streams.audio
        if not streams:
            return None
        context = streams[0].codec_context
        return int(context.sample_rate), int(context.layout.nb_channels)


def audio_span(span: AudioSpan) -> Iterator[np.ndarray]:
    """The span's samples as float32 arrays [C, T] in order, silence first where the audio starts after
    the span does, cut to exactly round((end - start) * rate) samples at most (fewer when the audio ends
    first). Integer samples are scaled to -1..1. Yields nothing for a file without audio."""
    with open_source(span.source) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate)
        wanted = math.ceil((span.end - span.start) * rate)
        position = None  # the next sample's index in the span (negative: before it)
        for frame in container.decode(stream):
            samples = _float_samples(frame)
            if position is None:
                position = round(((frame.time or 0.0) - span.start) * rate)
                if position > 0:  # the audio starts after the span: silence until it does
                    yield np.zeros((samples.shape[0], min(position, wanted)), np.float32)
            first = max(-position, 0)
            last = min(samples.shape[1], wanted - position)
            if last > first:
                yield samples[:, first:last]
            position += samples.shape[1]
            if position >= wanted:
                return


def read_audio(span: AudioSpan) -> dict | None:
    """The span as ComfyUI AUDIO {"waveform": [1, C, T], "sample_rate"}; None when the file has no audio
    stream. Memory: the span's samples."""
    found = audio_format(span.source)
    if found is None:
        return None
    chunks = list(audio_span(span))
    if not chunks:
        return None
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1))
    return {"waveform": waveform.unsqueeze(0), "sample_rate": found[0]}


def _float_samples(frame) -> np.ndarray:
    """A decoded AudioFrame's samples as float32 [C, T] (planar or packed, float or integer)."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    samples = data.reshape(channels, -1) if frame.format.is_planar else data.reshape(-1, channels).T
    if not np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
    return samples.astype(np.float32, copy=False)
