"""Forward-backward consistency of optical flow: which pixels keep a reliable correspondence."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..settings import Number

CONSISTENCY_THRESHOLD = Number(1.0, 0.0, 64.0, step=0.1, advice="0 turns the check off")
"""The forward-backward check's threshold in pixels (trajectories, keyframe propagation, the report)."""


def consistent_pixels(forward: torch.Tensor, backward: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels of the first frame whose flow can be trusted (the forward-backward check), per pair.

    A pixel x is kept when it lands inside frame b (x + forward(x) within the frame's area, i.e.
    -0.5 <= coordinate < size - 0.5) and the round trip closes:
    ``|forward(x) + backward(x + forward(x))| <= threshold`` pixels, backward sampled bilinearly
    (OpenCV's remap: weights in 1/32 px steps, border pixels repeated). A pixel that fails is occluded
    in b (something covers it) or the flow is wrong there. Loops over the N pairs; memory: a few
    (H, W, 2) float32 buffers. OpenCV rather than torch: one pair's arrays are small enough that torch's
    thread pool costs more than it gives, and far more on a machine whose cores are busy.

    Args:
        forward: flow (dx, dy) in pixels carrying frame a to frame b, float, any device.
        backward: flow (dx, dy) in pixels carrying frame b to frame a, float, any device.
        threshold: round-trip tolerance in pixels; ``<= 0`` turns the round-trip test off (only the
            in-frame test remains).
    Returns:
        bool mask on the CPU, True where the pixel's flow is reliable.
    Shape:
        - forward: (N, H, W, 2), N frame pairs of H x W pixels.
        - backward: (N, H, W, 2)
        - Returns: (N, H, W)
    """
    _, height, width, _ = forward.shape
    forward = forward.detach().cpu().to(torch.float32).numpy()
    backward = backward.detach().cpu().to(torch.float32).numpy()
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    out = []
    for fwd, bwd in zip(forward, backward, strict=True):
        lx, ly = xs + fwd[..., 0], ys + fwd[..., 1]
        ok = (lx >= -0.5) & (lx < width - 0.5) & (ly >= -0.5) & (ly < height - 0.5)
        if threshold > 0:
            back = cv2.remap(bwd, lx, ly, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            ok &= np.hypot(*np.moveaxis(fwd + back, -1, 0)) <= threshold
        out.append(ok)
    return torch.from_numpy(np.stack(out))
