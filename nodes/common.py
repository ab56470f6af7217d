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
Keyframes = io.Custom("DIFFFERV_KEYFRAMES")
"""Socket type of a keyframes.selection.Keyframes (which frames of a clip speed mode edits)."""


def progress(total: int | None) -> Callable[[int], None]:
    """A hook for long loops: hook(done) moves the node's progress bar to `done` of `total` (no bar when
    the total is unknown) and raises ComfyUI's interruption exception when the user pressed Cancel."""
    bar = comfy.utils.ProgressBar(total) if total else None

    def hook(done: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if bar is not None:
            bar.update_absolute(min(done, total), total)

    return hook


def input_problem(node_class, **values) -> str | None:
    """The first of the given inputs whose value is not what `node_class` declares for it (outside its
    min/max, or not one of its options), as a sentence; None when all fit. Linked inputs (None at
    validation time) are skipped. ComfyUI skips its own min/max check for every input a validate_inputs
    names, and ComfyUI 0.3.x checks no V3 combo's options at all: a node's validate_inputs checks the
    inputs it names, and its combos, with this."""
    declared = node_class.INPUT_TYPES()
    specs = {**declared.get("optional", {}), **declared.get("required", {})}
    for name, value in values.items():
        if value is None:
            continue
        kind, options = specs[name][0], specs[name][1] if len(specs[name]) > 1 else {}
        choices = kind if isinstance(kind, list) else options.get("options")
        if choices is not None and value not in choices:
            return f"{name} is {value!r}; choose one of: {', '.join(map(str, choices))}"
        low, high = options.get("min"), options.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{name} is {value}; use a value from {low} to {high}"
    return None
