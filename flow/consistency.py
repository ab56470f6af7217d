"""Forward-backward consistency of optical flow: which pixels keep a reliable correspondence."""

from __future__ import annotations

import torch
from torch.nn import functional


def sample_flow(flow: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly samples ``flow`` [N, H, W, 2] at pixel positions ``points`` [N, H, W, 2] (x, y; pixel
    centres at integers), clamping to the border pixels. Returns [N, H, W, 2]."""
    _, h, w, _ = flow.shape
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=points.dtype)
    grid = (points * scale - 1.0).to(flow.dtype)
    sampled = functional.grid_sample(
        flow.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return sampled.permute(0, 2, 3, 1)


def consistent_pixels(forward: torch.Tensor, backward: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels of the first frame whose flow can be trusted, as bool [N, H, W].

    ``forward`` [N, H, W, 2] carries frame a to frame b, ``backward`` [N, H, W, 2] frame b to frame a
    (dx, dy in pixels). A pixel x is kept when it lands inside frame b (x + forward(x) within the frame's
    area, i.e. -0.5 <= coordinate < size - 0.5) and the round trip closes:
    ``|forward(x) + backward(x + forward(x))| <= threshold`` pixels, backward sampled bilinearly. A pixel
    that fails is occluded in b (something covers it) or the flow is wrong there. ``threshold <= 0``
    turns the round-trip test off (only the in-frame test remains). Memory: a few [N, H, W, 2] buffers.
    """
    _, h, w, _ = forward.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=forward.dtype), torch.arange(w, dtype=forward.dtype), indexing="ij"
    )
    landing = torch.stack([xs, ys], dim=-1) + forward
    lx, ly = landing.unbind(-1)
    inside = (lx >= -0.5) & (lx < w - 0.5) & (ly >= -0.5) & (ly < h - 0.5)
    if threshold <= 0:
        return inside
    round_trip = forward + sample_flow(backward, landing)
    return inside & (torch.linalg.vector_norm(round_trip, dim=-1) <= threshold)
