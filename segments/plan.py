"""Where a long clip's segments lie (`plan_segments`) and how many frames one holds (`segment_frames`:
the most the host's free RAM holds at the bytes a frame costs there, `host_bytes_per_frame`).

Two neighbouring segments share `overlap` frames; the later one fades in over them (segments.blend), so
each frame of the clip is written once."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Number

MIN_SEGMENT = 16
MAX_SEGMENT = 4096
"""Load Video's max_frames cap: a segment is one Load Video range."""
SEGMENT_FRAMES = Number(
    0,
    MIN_SEGMENT,
    MAX_SEGMENT,
    off=0,
    advice="auto (the default) takes the longest the host's free RAM holds; shorter segments lose less to an "
    "interrupt and spread over more servers, each adds its overlap to the work",
)
"""Frames a segment of a long edit holds (the `edit` command's --segment; 0: the whole clip at once)."""
SEGMENT_OVERLAP = 16
"""Frames two neighbouring segments share (one context window at the default): the later segment fades in
over them, so a seam is blended as the context windows' overlaps are."""
SEGMENT_SHARE_OF_FREE_RAM = 0.5
"""An automatic segment holds at most this share of the host's free RAM (the rest: the models, ComfyUI,
the segment's own peaks)."""
PER_PIXEL_BYTES = 12 + 5.2 + 12
"""Host bytes a working frame costs per pixel besides the inversion's cache: the float32 IMAGE (12), the
trajectories and the kept source flow (5.2, measured at 512 px by bench_long_clips.py), the decoded edit
(12)."""
COMPARE_PER_PIXEL_BYTES = 24
"""And the input | edit comparison (two float32 IMAGE frames side by side), when it is asked for."""


@dataclass(frozen=True)
class Segment:
    """Frames `start` .. `start + frames` of the edited range (0 = its first frame); the first `blend_in`
    of them are shared with the segment before, the last `blend_out` with the one after."""

    index: int
    start: int
    frames: int
    blend_in: int
    blend_out: int

    @property
    def end(self) -> int:
        return self.start + self.frames

    @property
    def written(self) -> tuple[int, int]:
        """The frames (of the edited range) this segment writes itself: its own and the blended ones it
        fades in over, not those the next segment fades in over."""
        return self.start, self.end - self.blend_out


def plan_segments(total: int, length: int, overlap: int | None = None) -> list[Segment]:
    """Cut `total` frames into the fewest segments of at most `length` frames that share at least
    `overlap` frames with their neighbours (default: SEGMENT_OVERLAP, at most a quarter of a segment),
    all about as long (a short last segment would see little context), the shared frames spread evenly.
    `length` 0 or at least `total`: one segment."""
    if length <= 0 or length >= total:
        return [Segment(0, 0, total, 0, 0)]
    overlap = min(SEGMENT_OVERLAP, length // 4) if overlap is None else overlap
    if length <= 2 * overlap:
        raise ValueError(f"a segment of {length} frames cannot share {overlap} with each neighbour")
    stride = length - overlap
    count = -(-(total - overlap) // stride)
    size = -(-(total + (count - 1) * overlap) // count)  # each segment's frames, at most `length`
    starts = [round(i * (total - size) / (count - 1)) for i in range(count)]
    segments = []
    for index, start in enumerate(starts):
        blend_in = starts[index - 1] + size - start if index else 0
        blend_out = start + size - starts[index + 1] if index + 1 < count else 0
        segments.append(Segment(index, start, size, blend_in, blend_out))
    return segments


def host_bytes_per_frame(height: int, width: int, cache_per_frame: int, compare: bool) -> int:
    """Host bytes the edit of one height x width working frame holds at its peak: the frame, its flow,
    its decoded edit (and comparison), and `cache_per_frame` bytes of the inversion's cache (the recompute
    mode's latents or the store's features, editing.preservation)."""
    per_pixel = PER_PIXEL_BYTES + (COMPARE_PER_PIXEL_BYTES if compare else 0)
    return round(per_pixel * height * width) + cache_per_frame


def segment_frames(free_ram: int, per_frame: int, total: int) -> int:
    """The automatic segment length: the frames SEGMENT_SHARE_OF_FREE_RAM of `free_ram` bytes holds at
    `per_frame` bytes each, within MIN_SEGMENT .. MAX_SEGMENT; 0 (the whole clip) when all `total` fit."""
    fits = int(SEGMENT_SHARE_OF_FREE_RAM * free_ram // max(per_frame, 1))
    if fits >= total and total <= MAX_SEGMENT:
        return 0
    return max(MIN_SEGMENT, min(fits, MAX_SEGMENT))
