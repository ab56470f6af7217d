"""What reading and writing clips share: the per-frame progress hook."""

from __future__ import annotations

from collections.abc import Callable

FrameHook = Callable[[int], None]
"""Called after each frame with the count so far (progress, interruption)."""
