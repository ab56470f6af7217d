"""A clip's display orientation: the display matrix a phone writes (rotation by a multiple of 90 degrees,
possibly mirrored), read from a decoded frame's side data and applied to its pixels so frames are upright.

FFmpeg's display matrix (libavutil/display.h) is nine int32 values [a b u; c d v; x y w] (a, b, c, d in
16.16 fixed point) that map a coded pixel (x, y), y pointing down, to its displayed place
(a*x + c*y, b*x + d*y) plus an offset. A phone recording in portrait codes landscape frames and writes
a = 0, b = 1, c = -1, d = 0: shown turned 90 degrees clockwise. Only the eight axis-aligned matrices
(multiples of 90 degrees, mirrored or not) occur in practice; others are rounded to the nearest of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

FIXED_ONE = 1 << 16


@dataclass(frozen=True)
class Orientation:
    """One of the eight axis-aligned display transforms: displayed x = a*x + c*y, y = b*x + d*y (+ offset),
    with a, b, c, d in {-1, 0, 1} and exactly one non-zero entry per row and column."""

    a: int = 1
    b: int = 0
    c: int = 0
    d: int = 1

    @property
    def identity(self) -> bool:
        return (self.a, self.b, self.c, self.d) == (1, 0, 0, 1)

    @property
    def swaps_sides(self) -> bool:
        """Whether the displayed frame is the coded one's height wide (a quarter turn)."""
        return self.a == 0

    @property
    def mirrored(self) -> bool:
        return self.a * self.d - self.b * self.c < 0

    @property
    def clockwise_degrees(self) -> int:
        """The turn (0, 90, 180, 270 clockwise on screen); a mirrored matrix is this turn, then a mirror
        left to right (FFmpeg's horizontal flip negates a and c)."""
        a, b = (-self.a, self.b) if self.mirrored else (self.a, self.b)
        # the coded x axis (1, 0) ends up pointing along (a, b) on screen, y down: 90 clockwise is (0, 1)
        return {(1, 0): 0, (0, 1): 90, (-1, 0): 180, (0, -1): 270}[(a, b)]

    def upright_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a coded width x height frame once shown."""
        return (height, width) if self.swaps_sides else (width, height)

    def describe(self) -> str:
        """For the plan and the node: e.g. "turned 90 degrees clockwise", "mirrored", "turned 90 degrees
        clockwise and mirrored"."""
        turn = f"turned {self.clockwise_degrees} degrees clockwise" if self.clockwise_degrees else ""
        return " and ".join(part for part in (turn, "mirrored" if self.mirrored else "") if part)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The displayed frame of a coded one: [H, W, C] -> [H', W', C] (a view; no copy)."""
        if self.identity:
            return pixels
        if self.swaps_sides:
            # displayed (x', y') = (c*y, b*x): the transposed frame, then flipped where c or b is negative
            shown = pixels.swapaxes(0, 1)
            row_sign, column_sign = self.b, self.c
        else:
            shown = pixels
            row_sign, column_sign = self.d, self.a
        if row_sign < 0:
            shown = shown[::-1]
        if column_sign < 0:
            shown = shown[:, ::-1]
        return shown


UPRIGHT = Orientation()


def orientation_of(matrix: bytes | None) -> Orientation:
    """The Orientation of FFmpeg's 36-byte display matrix (native-endian int32 x 9); upright for None,
    a malformed matrix or one that is not near a multiple of 90 degrees."""
    if matrix is None or len(matrix) != 36:
        return UPRIGHT
    a, b, _, c, d, *_ = struct.unpack("=9i", matrix)
    rounded = tuple(round(value / FIXED_ONE) for value in (a, b, c, d))
    if any(abs(value) > 1 for value in rounded) or rounded[0] * rounded[3] - rounded[1] * rounded[2] == 0:
        return UPRIGHT
    if rounded[0] != 0 and rounded[1] != 0:
        return UPRIGHT  # a turn between the quarter turns: not written by cameras
    return Orientation(*rounded)


def frame_orientation(frame) -> Orientation:
    """The Orientation of a decoded PyAV VideoFrame, from its DISPLAYMATRIX side data (FFmpeg 7+ gives
    every decoded frame the stream's display matrix)."""
    for side_data in frame.side_data:
        if str(getattr(side_data.type, "name", side_data.type)).upper().endswith("DISPLAYMATRIX"):
            return orientation_of(bytes(side_data))
    return UPRIGHT
