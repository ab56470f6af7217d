"""A picture of a mask on its frames: outside the mask the frame is dimmed and tinted blue, so the region
an edit may change stands out."""

from __future__ import annotations

import torch

OUTSIDE_TINT = (0.25, 0.35, 0.75)


def mask_preview(frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """IMAGE frames [F, H, W, 3] and MASK [F or 1, H, W] -> IMAGE [F, H, W, 3]: the frame where the mask
    is 1, a dim blue-tinted frame where it is 0, blended in between."""
    weights = masks.to(frames.dtype)[..., None]  # [F, H, W, 1]
    tint = frames.new_tensor(OUTSIDE_TINT)
    outside = 0.5 * frames * tint
    return torch.lerp(outside, frames, weights)
