"""A picture of a mask on its frames: outside the mask the frame is dimmed and tinted blue, so the region
an edit may change stands out."""

from __future__ import annotations

import torch

OUTSIDE_TINT = (0.25, 0.35, 0.75)


def mask_preview(frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """A preview IMAGE: the frame where the mask is 1, a dim blue-tinted frame where it is 0, blended in
    between.

    Args:
        frames: ComfyUI IMAGE, float RGB in 0..1.
        masks: the MASK, float in 0..1, on the frames' device; one mask for the clip or one per frame.
    Returns:
        the preview IMAGE in the frames' dtype and on their device.
    Shape:
        - frames: (F, H, W, 3), F frames of H x W pixels.
        - masks: (F, H, W) or (1, H, W)
        - Returns: (F, H, W, 3)
    """
    weights = masks.to(frames.dtype)[..., None]  # [F, H, W, 1]
    tint = frames.new_tensor(OUTSIDE_TINT)
    outside = 0.5 * frames * tint
    return torch.lerp(outside, frames, weights)
