"""A video file's first video stream through PyAV: its nominal rate, when its frames are shown (from the
packets, without decoding), and its decoded frames with their display-order index. No ComfyUI import.

`source` is a path or a binary file object (ComfyUI's VIDEO values may hold an in-memory file): every
opening starts again from its beginning.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from .timing import Timing, constant_timing, timing_from_stamps

Source = Path | str | BinaryIO

TIMESTAMP_TOLERANCE = 1e-6
"""Seconds: a decoded frame's time matches the packet time this close (frames are milliseconds apart)."""


class ClipError(ValueError):
    """A video file that cannot be read: the message names the file, what was found and what to do."""


class NoVideoStreamError(ValueError):
    """The file holds no video stream."""


def open_source(source: Source):
    """`av.open` on a path or a file object (rewound)."""
    if hasattr(source, "seek"):
        source.seek(0)
        return av.open(source)
    return av.open(str(source))


def video_stream(container):
    if not container.streams.video:
        raise NoVideoStreamError("no video stream")
    return container.streams.video[0]


def own_rate(stream) -> float:
    """The stream's nominal frames per second (FFmpeg's average, else its guess, else 25)."""
    return float(stream.average_rate or stream.guessed_rate or 25)


def read_timing(source: Source) -> Timing | None:
    """When each frame of the first video stream is shown, from its packets' timestamps (demuxed, not
    decoded: fast). Packets FFmpeg marks to discard (before an edit list's start) are left out. A stream
    without timestamps gets its packets 1 / nominal rate apart. None when it holds no packet."""
    with open_source(source) as container:
        stream = video_stream(container)
        rate = own_rate(stream)
        stamps, untimed = [], 0
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.pts is None:
                untimed += 1
            else:
                stamps.append((packet.pts, packet.duration or 0))
        if untimed:
            return constant_timing(untimed + len(stamps), rate) if untimed + len(stamps) else None
        return timing_from_stamps(stamps, float(stream.time_base), rate)


def decoded_frames(container, stream, timing: Timing, first: int = 0) -> Iterator[tuple[int, object]]:
    """(display-order index into `timing`, PyAV VideoFrame) of each decoded frame, in display order,
    indices increasing (a frame whose time matches no packet is placed after the previous one). With
    `first` > 0 the decoding starts at the keyframe before frame `first` (a seek: a segment of a long clip
    costs its own frames, not all those before it); where the container cannot seek there, or lands past
    it, it starts at the beginning. Every caller decodes with the same threading, so a damaged file fails
    at the same frame for each."""
    stream.thread_type = "AUTO"
    frames = _decoded_from(container, stream, timing, first) if first > 0 else container.decode(stream)
    previous = -1
    for frame in frames:
        if frame.time is None:
            index = previous + 1
        else:
            found = int(np.searchsorted(timing.starts, frame.time - TIMESTAMP_TOLERANCE))
            index = max(found, previous + 1)
        previous = index
        yield index, frame


def _decoded_from(container, stream, timing: Timing, first: int) -> Iterator:
    """The stream's decoded frames from the keyframe at or before frame `first` on, or from the start
    when a seek does not land at or before it (no index, no timestamps)."""
    target = float(timing.starts[first]) - TIMESTAMP_TOLERANCE
    try:
        container.seek(math.floor(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        decoded = container.decode(stream)
        head = next(decoded, None)
    except av.error.FFmpegError:
        head = None
    if head is not None and head.time is not None and head.time <= target + 2 * TIMESTAMP_TOLERANCE:
        yield head
        yield from decoded
        return
    container.seek(0, backward=True, any_frame=False)
    yield from container.decode(stream)
