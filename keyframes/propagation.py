"""The edit of the keyframes carried to the frames between them, along the source's optical flow.

What is carried is the keyframe's change, not its pixels: for a frame t between keyframes a and b,

    out_t = source_t + w_a * warp(edited_a - source_a, t -> a) + w_b * warp(edited_b - source_b, t -> b)

where warp samples the keyframe's change at the point of the keyframe that pixel x of frame t shows
(x + flow_{t -> a}(x)). Where the edit changed nothing the change is zero, so the frame keeps its own
pixels (its mouth, its blinks, its background) exactly; where it did, the change moves with the content.
The weights are the time weights (b - t) / (b - a) and (t - a) / (b - a), each multiplied by whether the
pixel passes the forward-backward check towards that keyframe: a pixel hidden in keyframe a (an
occlusion, or flow that fails) takes its change from b, and the other way round; hidden in both, the time
weights alone decide.

Why this rather than IP-FaceDiff's (TokenFlow's) nearest-neighbour search of UNet features at every step:
that search needs the source features of every frame at every step, i.e. UNet evaluations of every frame,
which is the cost speed mode removes; here the frames between keyframes cost four optical flows and no
UNet call, and the source's own detail outside the edit is kept exactly rather than re-generated.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from ..flow.backends import BACKEND as FLOW_BACKEND
from ..flow.backends import FlowBackend
from ..flow.consistency import consistent_pixels
from ..settings import Choice
from .selection import Keyframes

BACKEND = Choice(FLOW_BACKEND.default, ("dis", "farneback"))
"""Propagate Keyframe Edit's flow backend: those that need no model file."""

FrameHook = Callable[[int], None]
"""Called with the count of frames done (progress, interruption)."""
HIDDEN_WEIGHT = 1e-3
"""Weight of a keyframe at pixels that fail the consistency check towards it (relative to 1)."""


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = image(x + flow(x)), bilinear, edges repeated. image [H, W, C] float32,
    flow [H, W, 2] (dx, dy) px -> [H, W, C]."""
    height, width = flow.shape[:2]
    xs = np.arange(width, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(height, dtype=np.float32)[:, None] + flow[..., 1]
    return cv2.remap(image, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(image.shape)


def propagate_edit(
    source: torch.Tensor,
    edited_keys: torch.Tensor,
    keyframes: Keyframes,
    backend: FlowBackend,
    threshold: float = 1.0,
    on_frame: FrameHook | None = None,
) -> torch.Tensor:
    """The whole clip edited: source IMAGE [F, H, W, 3], edited keyframes [K, H, W, 3] (in the order of
    `keyframes.indices`) -> IMAGE [F, H, W, 3]; keyframes are the edited ones, the rest as the module says.

    `threshold`: the forward-backward check in pixels (flow.consistency). The hook counts frames done.
    Memory: the clip in and out, plus the flows of one gap between keyframes (4 x (k - 1) flows)."""
    frames = int(source.shape[0])
    if keyframes.frames != frames:
        raise ValueError(
            f"keyframes: they were picked from {keyframes.frames} frames, the source has {frames}"
        )
    if tuple(edited_keys.shape) != (len(keyframes.indices), *source.shape[1:]):
        raise ValueError(
            f"edited: expected the {len(keyframes.indices)} edited keyframes at {source.shape[2]}x"
            f"{source.shape[1]} ({tuple(source.shape[1:])} each), got {tuple(edited_keys.shape)}: connect the "
            "decoded output of the keyframes' edit"
        )
    source = source.detach().cpu().float()
    out = source.clone()
    keys = list(keyframes.indices)
    out[keys] = edited_keys.detach().cpu().float()
    changes = (out[keys] - source[keys]).numpy()  # [K, H, W, 3]
    done = len(keys)
    for position in range(len(keys) - 1):
        a, b = keys[position], keys[position + 1]
        between = list(range(a + 1, b))
        if not between:
            continue
        out[between] = _between(source, between, (a, b), changes[position : position + 2], backend, threshold)
        done += len(between)
        if on_frame is not None:
            on_frame(done)
    return out.clamp_(0, 1)


def _between(source, between, ends, changes, backend, threshold) -> torch.Tensor:
    """Frames `between` (indices) from the changes [2, H, W, 3] of the keyframes `ends` (a, b)."""
    count = len(between)
    frames = source[between]
    a, b = ends
    key_a, key_b = source[a].expand(count, -1, -1, -1), source[b].expand(count, -1, -1, -1)
    # one backend call for the four directions: t -> a, a -> t, t -> b, b -> t
    flows = backend.compute(
        torch.cat([frames, key_a, frames, key_b]), torch.cat([key_a, frames, key_b, frames])
    )
    to_a, from_a, to_b, from_b = flows.split(count)
    seen_a = consistent_pixels(to_a, from_a, threshold).numpy().astype(np.float32) + HIDDEN_WEIGHT
    seen_b = consistent_pixels(to_b, from_b, threshold).numpy().astype(np.float32) + HIDDEN_WEIGHT
    to_a, to_b = to_a.numpy(), to_b.numpy()
    out = frames.clone()
    for i, t in enumerate(between):
        weight_a = (b - t) / (b - a) * seen_a[i]
        weight_b = (t - a) / (b - a) * seen_b[i]
        total = weight_a + weight_b
        change = (weight_a / total)[..., None] * warp(changes[0], to_a[i])
        change += (weight_b / total)[..., None] * warp(changes[1], to_b[i])
        out[i] += torch.from_numpy(change)
    return out
