"""What differs between the ComfyUI versions the pack supports (0.3.75 to 0.33), in one place.

Each function here reads the host's own objects (a signature, a method) rather than its version number,
so a version between or after the two tested ones takes whichever path its code offers. Imports no
ComfyUI module: callers hand in what they have.

Differences handled here:
- `hidden_inputs`: how ``execution.get_output_data`` takes a node's hidden inputs (0.4 changed it);
- `trim_window`: the trim window a core VIDEO carries (newer ComfyUI: the core trim / slice widgets);
- `EXECUTOR_CACHE_OFF`: the cache settings the executor reads (0.33 reads ``ram_inactive`` too).

Differences met by meaning elsewhere, without a branch on the version:
- the anchor frame of newer context windows (``causal_window_fix``): ``windows/frames.py`` reads the
  window object's anchor, ``nodes/window_glue.py`` counts it;
- ``PromptServer.instance``, which newer core nodes reach for while they load: ``comfyhost/runner.py``
  makes ComfyUI's own server object, unstarted, on every version;
- the ``optical_flow`` model folder, which newer ComfyUI registers itself: ``nodes/trajectories.py``
  widens it to TorchScript files instead of registering it;
- Preview Image's pass-through output (0.33): an unlinked output slot is not part of a shipped
  workflow's description (``tests/workflow_graphs.py``);
- node outputs without a display name are named by their id in 0.8 and newer, by their type before:
  every output of the pack has an explicit display name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

EXECUTOR_CACHE_OFF = {"lru": 0, "ram": 0, "ram_inactive": 0}
"""``PromptExecutor``'s cache_args as main.py passes them with caching off: every key any supported
version reads (0.33 reads "ram_inactive"; older ones ignore it)."""


def hidden_inputs(get_output_data: Callable, hidden: dict) -> dict:
    """The keyword that hands `hidden` to ComfyUI's ``execution.get_output_data``: ``hidden_inputs=`` up
    to ComfyUI 0.3.x, ``v3_data={"hidden_inputs": ...}`` from 0.4 on (read off its signature)."""
    if "hidden_inputs" in inspect.signature(get_output_data).parameters:
        return {"hidden_inputs": hidden}
    return {"v3_data": {"hidden_inputs": hidden}}


def trim_window(video) -> tuple[float, float]:
    """(start, duration) in seconds of the part of a file-backed core VIDEO that is meant (duration 0: to
    the end); (0, 0) where the VIDEO carries no trim (ComfyUI before the core trim widgets)."""
    window = getattr(video, "get_active_trim_window", None)
    if window is None:
        return 0.0, 0.0
    start, duration = window()
    return float(start), float(duration)
