"""A picture of trajectories: each latent cell painted in its trajectory's colour, over the frames.

A cell keeps its colour while tracking holds, so a tracked region's colour moves with the content from
frame to frame; a colour change marks a broken chain. Trajectories that span the whole clip are painted
bright, shorter ones darker in proportion to their length, so where tracking breaks shows at a glance.
"""

from __future__ import annotations

import torch

from ..settings import Choice
from .trajectories import LATENT_FACTORS
from .trajectory_set import TrajectoryGrid

PREVIEW_GRIDS = {f"1/{factor}": factor for factor in LATENT_FACTORS}
"""The latent grids a preview can show, by name (1/8: finest) -> their factor."""
PREVIEW_GRID = Choice("1/16", tuple(PREVIEW_GRIDS))
"""Compute Flow Trajectories' preview_grid."""

_GOLDEN = 0.6180339887498949


def trajectory_colours(ids: torch.Tensor, brightness: torch.Tensor) -> torch.Tensor:
    """One RGB colour per trajectory id, far-apart hues for neighbouring ids.

    The hue is the fractional part of id x golden ratio (consecutive ids, i.e. neighbouring cells of one
    frame, get far-apart hues), saturation 0.75, value ``brightness``.

    Args:
        ids: trajectory ids, any integer dtype, on the CPU (the hue table is built there).
        brightness: the HSV value of each id's colour, 0..1, same shape as ``ids``.
    Returns:
        float32 RGB in 0..1.
    Shape:
        - ids: (*), any shape.
        - brightness: (*), the shape of ``ids``.
        - Returns: (*, 3)
    """
    hue = torch.frac(ids.to(torch.float64) * _GOLDEN).to(torch.float32).unsqueeze(-1)
    value = brightness.to(torch.float32).unsqueeze(-1)
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]) + hue * 6.0, 6.0)
    return value - value * 0.75 * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def render_trajectories(grid: TrajectoryGrid, frames: torch.Tensor, opacity: float = 0.7) -> torch.Tensor:
    """Paints ``grid``'s trajectories over ``frames``, each trajectory in its own colour.

    Each cell (upsampled to its H/h x W/w pixels) gets its trajectory's colour at
    ``0.3 + 0.7 * length / F`` brightness, mixed with the frame at ``opacity``. Frames that do not match
    the grid (another count, sides not multiples of h and w) are refused with a ValueError. Memory: one
    image batch.

    Args:
        grid: the trajectories on one latent grid of h x w cells over F frames, its tensors on the CPU.
        frames: the frames the trajectories were computed from, float RGB in 0..1, any device; channels
            after the third (alpha) are ignored.
        opacity: weight of the trajectory colours in the mix, 0..1 (1: colours only, 0: frames only).
    Returns:
        the picture, float32 RGB clamped to 0..1, on the CPU.
    Shape:
        - frames: (F, H, W, C), F frames of H x W pixels, C >= 3 channels.
        - Returns: (F, H, W, 3)
    """
    count, height, width = grid.frames, grid.height, grid.width
    if frames.shape[0] != count or frames.shape[1] % height or frames.shape[2] % width:
        raise ValueError(
            f"frames {tuple(frames.shape)} do not match trajectories of {count} frames on a "
            f"{height}x{width} grid: render the frames the trajectories were computed from"
        )
    share = grid.lengths.to(torch.float32) / count
    colours = trajectory_colours(grid.ids, 0.3 + 0.7 * share[grid.ids]).reshape(count, height, width, 3)
    scale_y, scale_x = frames.shape[1] // height, frames.shape[2] // width
    colours = colours.repeat_interleave(scale_y, dim=1).repeat_interleave(scale_x, dim=2)
    return (opacity * colours + (1.0 - opacity) * frames[..., :3].to("cpu", torch.float32)).clamp(0.0, 1.0)
