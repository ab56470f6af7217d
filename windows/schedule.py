"""The static window schedule and the plan of a windowed run.

`static_windows` gives the same windows as ComfyUI's ``standard_static`` schedule
(``comfy.context_windows.create_windows_static_standard``; tests/test_windows.py compares them): windows
of `length` frames starting every ``length - overlap`` frames, the last one moved back so that it ends
at the clip's last frame. The windows are the same at every step, so the inversion and the sampler see
the same windows at every sigma (what the store cache mode needs). A clip no longer than one window is
one window: ComfyUI's context handler then does not window at all.

`RunPlan` counts what an inversion + editing run costs under a window schedule: UNet calls, frames the
UNet evaluates, and the largest UNet batch (window x chunks), which does not depend on the clip's
length.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Number
from .frames import FrameWindow, describe

CONTEXT_LENGTH = Number(
    16, 2, 256, advice="16 is the default; GPU memory and the span of the trajectory attention grow with it"
)
"""Frames per context window (Context Windows (DiffFERV)'s context_length, the edit's --window)."""
CONTEXT_OVERLAP = Number(
    4,
    0,
    CONTEXT_LENGTH.high - 1,
    advice="more overlap: smoother seams, more UNet work; always less than the window",
)
"""Frames neighbouring windows share (context_overlap, --overlap); less than the window."""


def overlap_problem(
    length: int, overlap: int, length_name: str = "context_length", overlap_name: str = "context_overlap"
) -> str | None:
    """Why `overlap` cannot go with windows of `length` frames (None when it can): it must be 0 ..
    length - 1, since windows advance by length - overlap frames (ComfyUI's schedules loop forever or
    return no window otherwise)."""
    if 0 <= overlap < length:
        return None
    return f"{overlap_name} is {overlap}; use 0 to {length - 1} (less than {length_name} {length})"


def check_window_settings(length: int, overlap: int) -> None:
    """A clear error unless length >= 1 and 0 <= overlap < length."""
    if length < 1:
        raise ValueError(f"context window length must be at least 1 frame, got {length}")
    problem = overlap_problem(length, overlap)
    if problem:
        raise ValueError(problem)


def static_windows(frames: int, length: int, overlap: int) -> list[FrameWindow]:
    """Windows of `length` frames every ``length - overlap`` frames over `frames` frames, the last one
    ending at the last frame; one window of all frames when the clip is no longer than `length`."""
    check_window_settings(length, overlap)
    if frames <= length:
        return [tuple(range(frames))]
    stride = length - overlap
    starts = list(range(0, frames - length, stride))
    return [tuple(range(start, start + length)) for start in starts] + [tuple(range(frames - length, frames))]


def frame_evaluations(windows: list[FrameWindow]) -> int:
    """Frames the UNet evaluates per step and chunk under `windows` (overlapping frames count once per
    window that holds them)."""
    return sum(len(window) for window in windows)


@dataclass(frozen=True)
class RunPlan:
    """What an inversion + injection-sampling run evaluates.

    frames: the clip's frames. windows: the windows of every step. steps: DDIM steps (both passes).
    sampling_chunks: batch chunks per sampling call (2 with guidance: edit + negative; 3 in the recompute
    cache mode, which adds the source path). store_final_call: the store mode's inversion evaluates once
    more at the top sigma to record its features. latent: the latent grid (h, w) of the frames, when known
    (what the GPU memory of a call depends on).
    """

    frames: int
    windows: tuple[FrameWindow, ...]
    steps: int
    sampling_chunks: int
    store_final_call: bool = False
    latent: tuple[int, int] | None = None

    @property
    def windowed(self) -> bool:
        return len(self.windows) > 1 or len(self.windows[0]) != self.frames

    @property
    def inversion_calls(self) -> int:
        """UNet calls of the inversion (one chunk: the source prompt at guidance 1)."""
        return (self.steps + int(self.store_final_call)) * len(self.windows)

    @property
    def sampling_calls(self) -> int:
        """UNet calls of the sampler, when ComfyUI batches its chunks into one call (it splits them only
        when the device's free memory says they do not fit)."""
        return self.steps * len(self.windows)

    @property
    def longest_window(self) -> int:
        """Frames of the longest window (the whole clip when it runs in one batch)."""
        return max(len(window) for window in self.windows)

    @property
    def largest_batch(self) -> int:
        """Frames in the largest UNet batch: the longest window times the sampling chunks."""
        return self.longest_window * max(self.sampling_chunks, 1)

    @property
    def frame_evaluations(self) -> int:
        """Frame-evaluations of the UNet over the whole run (frames x chunks x calls)."""
        per_step = frame_evaluations(list(self.windows))
        return (
            per_step * (self.steps + int(self.store_final_call))
            + per_step * self.steps * self.sampling_chunks
        )

    def describe(self) -> list[str]:
        """The plan as lines for a person."""
        if self.windowed:
            shown = ", ".join(describe(w).removeprefix("frames ") for w in self.windows[:4])
            more = f", ... ({len(self.windows)} in all)" if len(self.windows) > 4 else ""
            windows = (
                f"{len(self.windows)} windows of up to {max(map(len, self.windows))} frames: {shown}{more}"
            )
        else:
            windows = "one window (the whole clip in one batch)"
        return [
            f"frames: {self.frames}",
            f"windows: {windows}",
            f"UNet calls: inversion {self.inversion_calls} ({self.steps} steps x {len(self.windows)} windows"
            f"{' + the final recording call' if self.store_final_call else ''}), sampling {self.sampling_calls} "
            f"({self.sampling_chunks} chunks each); largest UNet batch {self.largest_batch} frames",
        ]
