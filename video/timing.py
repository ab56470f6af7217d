"""When a clip's frames are shown, and the frames of the same span at a constant rate.

Phones record at a variable frame rate (frames 1/30 s apart, then 1/15 s in low light). An edit, and any
video it is written to, runs at one rate; taking the decoded frames one after another at an average rate
plays the fast parts slowly and the slow parts fast, and the audio drifts. Here the clip's span is cut
into slots of 1 / rate seconds and each slot takes the frame shown at its middle (`slot_frames`), so the
output lasts as long as the source and each moment stays where its sound is. For a constant-rate clip at
its own rate the slots are its frames, one for one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..settings import Number

MAX_RATE = 240.0
"""The highest frame rate a clip is taken at (Load Video's frame_rate) or written with (Video Combine's fps)."""
TIME_EPSILON = 1e-6
"""Seconds within which a frame's start counts as on a span's edge (timestamps are rounded to the
container's time base)."""
START_SECONDS = Number(
    0.0, 0.0, 24 * 3600.0, advice="a time in the clip: 12.5s, 1:05 or 1:05.5; or a frame number: 300"
)
"""Where an edit starts in its clip, as a time (the `edit` command's --start; a frame number is Load
Video's skip_first_frames)."""
VARIABLE_TOLERANCE = 0.1
"""Frame intervals further than this fraction of the median interval from it make a clip variable-rate."""


@dataclass(frozen=True)
class Timing:
    """Start times of a clip's frames in display order (seconds, float64 [N], increasing) and the end of
    the last frame."""

    starts: np.ndarray
    end: float

    @property
    def frames(self) -> int:
        return len(self.starts)

    @property
    def duration(self) -> float:
        return self.end - float(self.starts[0])

    @property
    def average_rate(self) -> float:
        """Frames per second over the whole span."""
        return self.frames / self.duration

    @property
    def variable(self) -> bool:
        """Whether the intervals between frame starts differ (beyond timestamp rounding). The last
        frame's length is left out: containers often only guess it."""
        intervals = np.diff(self.starts)
        if len(intervals) < 2:
            return False
        median = float(np.median(intervals))
        return bool(np.abs(intervals - median).max() > max(VARIABLE_TOLERANCE * median, 1e-3))

    def trimmed(self, start: float, duration: float = 0.0) -> tuple[Timing, int] | None:
        """The frames shown from `start` seconds into the clip for `duration` seconds (0: to its end), a
        frame belonging where it starts: (their Timing, the index of the first of them), or None when no
        frame starts in that span. Times count from the first frame's start."""
        begin = float(self.starts[0]) + max(start, 0.0)
        end = begin + duration if duration > 0 else self.end
        first, stop = np.searchsorted(self.starts, [begin - TIME_EPSILON, end - TIME_EPSILON])
        if stop <= first:
            return None
        return Timing(self.starts[first:stop], min(end, self.end)), int(first)

    def slots(self, rate: float) -> int:
        """How many frames of 1 / `rate` seconds the span holds (at least one)."""
        return max(1, round(self.duration * rate))

    def slot_frames(self, rate: float, slots: int | None = None) -> np.ndarray:
        """The frame shown at the middle of each of the first `slots` (default all) constant-rate slots:
        int64 [slots] indices into the frames, non-decreasing (a frame shown for long repeats)."""
        count = self.slots(rate) if slots is None else min(slots, self.slots(rate))
        middles = float(self.starts[0]) + (np.arange(count) + 0.5) / rate
        return np.clip(np.searchsorted(self.starts, middles, side="right") - 1, 0, self.frames - 1)


def timing_from_stamps(
    stamps: list[tuple[int, int]], time_base: float, fallback_rate: float
) -> Timing | None:
    """Timing from a stream's (pts, duration) pairs in any order, in units of `time_base` seconds; the
    last frame lasts its own duration, or the median interval (or 1 / `fallback_rate`) when the container
    gives none. None when there is no frame."""
    if not stamps:
        return None
    ordered = sorted(stamps)
    starts = np.array([pts for pts, _ in ordered], np.float64) * time_base
    starts = np.unique(starts)  # a repeated timestamp would make a zero-length frame
    last = ordered[-1][1] * time_base
    if last <= 0:
        last = float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0 / fallback_rate
    return Timing(starts, float(starts[-1] + last))


def constant_timing(frames: int, rate: float) -> Timing:
    """The Timing of `frames` frames 1 / `rate` apart from 0 (a clip without timestamps)."""
    return Timing(np.arange(frames) / rate, frames / rate)


@dataclass(frozen=True)
class Picking:
    """Which frames of a clip an edit keeps: the clip at `rate` frames per second (0: its own rate, the
    average for a variable-rate clip), the first `skip_first` dropped, then every `every_nth` kept, at
    most `max_frames` (0: no cap)."""

    max_frames: int = 0
    skip_first: int = 0
    every_nth: int = 1
    rate: float = 0.0

    def clip_rate(self, timing: Timing, own_rate: float) -> float:
        """The constant rate the clip is taken at: the rate asked for, else the average of a variable-rate
        clip, else `own_rate` (the stream's nominal rate)."""
        if self.rate > 0:
            return self.rate
        return timing.average_rate if timing.variable else own_rate

    def resamples(self, timing: Timing) -> bool:
        """Whether frames are taken by their timestamps (slots) rather than one for one."""
        return self.rate > 0 or timing.variable

    def sources(self, timing: Timing, own_rate: float) -> np.ndarray:
        """The clip frame (display-order index) behind each kept frame: int64 [kept], non-decreasing."""
        if self.resamples(timing):
            last = self.skip_first + self.max_frames * self.every_nth if self.max_frames else None
            frames = timing.slot_frames(self.clip_rate(timing, own_rate), last)
        else:
            frames = np.arange(timing.frames)
        kept = frames[self.skip_first :: self.every_nth]
        return kept[: self.max_frames] if self.max_frames else kept

    def span(self, timing: Timing, own_rate: float, kept: int) -> tuple[float, float]:
        """(start, end) in the clip's seconds of `kept` frames picked this way: where their audio lies."""
        rate = self.clip_rate(timing, own_rate)
        start = float(timing.starts[0]) + self.skip_first / rate
        return start, start + kept * self.every_nth / rate


@dataclass(frozen=True)
class Start:
    """Where an edit starts: a frame of the clip (at the rate it is taken at) or a time in seconds."""

    frame: int | None = None
    seconds: float | None = None

    def frame_at(self, rate: float) -> int:
        """The first frame kept when the clip is taken at `rate` frames per second: the one shown at the
        time."""
        if self.frame is not None:
            return self.frame
        return int(np.floor(self.seconds * rate + TIME_EPSILON))

    def describe(self) -> str:
        return f"frame {self.frame}" if self.frame is not None else f"{self.seconds:g} s"


FIRST_FRAME = Start(frame=0)
"""The start of a clip (--start's default)."""
_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)")


def parse_start(text: str) -> Start:
    """A start as a person writes it: "300" (a frame), "12.5s" (seconds), "1:05", "1:05.5" or "0:01:05"
    (minutes or hours, minutes and seconds). Raises ValueError saying the forms."""
    text = text.strip()
    try:
        if text.isdigit():
            return Start(frame=int(text))
        if text.endswith("s") and text[:-1]:
            return Start(seconds=float(text[:-1]))
        clock = _CLOCK.fullmatch(text)
        if clock:
            hours, minutes, seconds = clock.groups()
            return Start(seconds=int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds))
    except ValueError:
        pass
    raise ValueError(f"{text!r} is no start; write a frame number (300), seconds (12.5s) or a time (1:05.5)")
