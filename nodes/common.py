"""What every node of the pack shares: its category, id prefix, shared socket types, and the
progress/interrupt hook."""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

CATEGORY = "DiffFERV"
PREFIX = "DiffFERV_"

Trajectories = io.Custom("DIFFFERV_TRAJECTORIES")
"""Socket type of a flow.trajectory_set.TrajectorySet (prefixed: other packs have a TRAJECTORY type)."""
Inversion = io.Custom("DIFFFERV_INVERSION")
"""Socket type of an editing.preservation.InversionResult."""


def progress(total: int | None) -> Callable[[int], None]:
    """A hook for long loops: hook(done) moves the node's progress bar to `done` of `total` (no bar when
    the total is unknown) and raises ComfyUI's interruption exception when the user pressed Cancel."""
    bar = comfy.utils.ProgressBar(total) if total else None

    def hook(done: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if bar is not None:
            bar.update_absolute(min(done, total), total)

    return hook
