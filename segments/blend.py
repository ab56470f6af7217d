"""The frames two neighbouring segments both edited, made one: a crossfade from the earlier segment's edit
to the later one's over the shared frames, its weight easing in and out (smoothstep), so the change of
segment has no kink in time."""

from __future__ import annotations

import numpy as np


def fade_in_weights(frames: int) -> np.ndarray:
    """The later segment's weight on each shared frame, rising from near 0 to near 1 along a smoothstep
    of (i + 1) / (frames + 1): neither segment's edit is taken alone at the seam's ends, where the other
    one's has only started or is about to stop.

    Args:
        frames: how many frames the two segments share.
    Returns:
        float32 weights, 0 < w < 1, increasing.
    Shape:
        - Returns: (frames,)
    """
    position = np.arange(1, frames + 1, dtype=np.float32) / (frames + 1)
    return position * position * (3 - 2 * position)


def crossfade(earlier: np.ndarray, later: np.ndarray, weight: float) -> np.ndarray:
    """One shared frame: (1 - weight) * earlier + weight * later, rounded.

    Args:
        earlier: the earlier segment's edit of the frame, uint8.
        later: the later segment's, uint8.
        weight: the later segment's weight, 0..1.
    Returns:
        the blended frame, uint8.
    Shape:
        - earlier: (H, W, 3)
        - later: (H, W, 3)
        - Returns: (H, W, 3)
    """
    mixed = earlier.astype(np.float32) * (1.0 - weight) + later.astype(np.float32) * weight
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
