"""Which frames of a clip are keyframes: every k-th from the first, and the last."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Number

KEYFRAME_EVERY = Number(4, 1, 64, advice="4 is the usual choice")
"""Select Keyframes' gap: every k-th frame (and the last) is a keyframe; 1 edits every frame."""


@dataclass(frozen=True)
class Keyframes:
    """The keyframes of a clip: `indices` (ascending, first 0 and last frames - 1) of a clip of `frames`."""

    indices: tuple[int, ...]
    frames: int

    @classmethod
    def every(cls, frames: int, every: int) -> Keyframes:
        """Frames 0, k, 2k, ... and the last one (k = `every`; k 1 keeps every frame)."""
        if frames < 1:
            raise ValueError("frames: a clip of at least one frame is needed")
        if every < 1:
            raise ValueError(f"keyframe_every: {every} must be at least 1")
        indices = sorted({*range(0, frames, every), frames - 1})
        return cls(tuple(indices), frames)

    def segment(self, frame: int) -> tuple[int, int]:
        """The positions (in `indices`) of the keyframes before and after `frame`; equal for a keyframe."""
        from bisect import bisect_left

        after = bisect_left(self.indices, frame)
        if self.indices[after] == frame:
            return after, after
        return after - 1, after
