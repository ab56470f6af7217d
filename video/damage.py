"""Damaged clips found before the work: a pass that decodes (without converting to RGB) the frames an edit
will use, and the sentence that says where decoding stops and what to do. No ComfyUI import.

A clip whose middle is damaged opens, shows its first frame and lists all its packets; only decoding
fails, part-way through. An edit that finds out then has lost its model loading and its first stages.
Decoding alone is cheap (the demo clip's 48 frames in about 30 ms here); converting and resizing is what
costs. The result is remembered per file version and picking, so a workflow queued again is not
decoded again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import av

from .container import ClipError, Source, decoded_frames, open_source, own_rate, read_timing, video_stream
from .timing import Picking


@dataclass(frozen=True)
class Damage:
    """Where decoding a clip stops: the first clip frame (display order) that does not decode, its time
    from the clip's start, the clip's frame count, how many frames the picking keeps before it, and
    FFmpeg's reason."""

    frame: int
    seconds: float
    frames: int
    usable: int
    reason: str

    def sentence(self, name: str, frames_setting: str) -> str:
        """One sentence naming the file as `name` and the frame cap as `frames_setting` (a flag or a node
        input)."""
        encode = f"re-encode the file (e.g. ffmpeg -i {Path(name).name} -c:v libx264 -crf 18 fixed.mp4)"
        advice = (
            f"keep the {self.usable} frames before it with {frames_setting} {self.usable}, or {encode} to edit "
            "all of it"
            if self.usable
            else encode
        )
        return (
            f"{name} is damaged: decoding stops at frame {self.frame} ({self.seconds:.2f} s) of {self.frames} "
            f"({self.reason}); {advice}"
        )


class DamagedClipError(ClipError):
    """Decoding failed part-way; `damage` says where."""

    def __init__(self, damage: Damage, name: str, frames_setting: str):
        super().__init__(damage.sentence(name, frames_setting))
        self.damage = damage


def find_damage(source: Source, picking: Picking) -> Damage | None:
    """Decode the frames `picking` keeps, from the keyframe before the first (as the reader does: damage
    before it does not matter) to the last; None when all of them decode, else where decoding stops.
    Frames are decoded, not converted. Files given by path are remembered by their path, size and
    modification time."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        stat = path.stat()
        return _find_damage_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns, picking)
    return _find_damage(source, picking)


@functools.lru_cache(maxsize=32)
def _find_damage_cached(path: str, size: int, mtime_ns: int, picking: Picking) -> Damage | None:
    return _find_damage(path, picking)


def _find_damage(source: Source, picking: Picking) -> Damage | None:
    timing = read_timing(source)
    if timing is None:
        return None
    with open_source(source) as container:
        stream = video_stream(container)
        kept = picking.sources(timing, own_rate(stream))
        if not len(kept):
            return None
        first, last = int(kept[0]), int(kept[-1])
        decoded = first - 1
        try:
            for index, _ in decoded_frames(container, stream, timing, first):
                decoded = index
                if index >= last:
                    return None
        except av.error.FFmpegError as error:
            return damage_at(decoded + 1, timing, kept, getattr(error, "strerror", None) or str(error))
    return None  # the stream ended early without an error: the reader repeats its last frame


def damage_at(frame: int, timing, kept, reason: str) -> Damage:
    """The Damage of a clip (its `timing`, the picked frames `kept`) whose frame `frame` does not decode."""
    seconds = (float(timing.starts[frame]) if frame < timing.frames else timing.end) - float(timing.starts[0])
    return Damage(frame, seconds, timing.frames, int((kept < frame).sum()), reason)
