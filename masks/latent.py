"""Masks at image resolution -> feathered masks on a latent grid, for blending edit and source latents.

A MASK in ComfyUI is float [M, H, W] in 0..1 (1 = may change); M is 1 (one mask for the clip) or the
frame count. The latent grid of an SD1.5 frame is (H / 8, W / 8).
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F  # noqa: N812


def check_masks(masks: torch.Tensor, frames: int, image_hw: tuple[int, int], name: str = "mask") -> None:
    """Refuse masks that do not fit the clip: three dimensions, M 1 or `frames`, and the frames' size.

    Raises ValueError naming `name` and what to do; dtype and values are not checked.

    Args:
        masks: the MASK, float in 0..1.
        frames: the clip's frame count.
        image_hw: the frames' (height, width) in pixels.
        name: what the error messages call the masks (the input's name).
    Shape:
        - masks: (M, H, W), M masks (1 for the clip or one per frame) of H x W pixels.
    """
    if masks.ndim != 3:
        raise ValueError(f"{name}: expected a MASK [masks, height, width], got shape {tuple(masks.shape)}")
    count, height, width = masks.shape
    if count not in (1, frames):
        raise ValueError(
            f"{name}: {count} masks for a clip of {frames} frames; give one mask for the whole clip or one per "
            "frame"
        )
    if (height, width) != tuple(image_hw):
        raise ValueError(
            f"{name}: the mask is {width}x{height} px and the frames are {image_hw[1]}x{image_hw[0]}; draw the "
            "mask on the frames as Load Video (DiffFERV) outputs them, or resize it first"
        )


def feather(masks: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Soften mask edges: a Gaussian blur whose sigma is radius_px / 2 (about radius_px of ramp on each
    side of the edge), borders replicated.

    Args:
        masks: float masks in 0..1, any device.
        radius_px: the ramp's width in pixels on each side of an edge; 0 or less returns `masks` itself.
    Returns:
        the blurred masks, float32 clamped to 0..1 on the masks' device (the input object, dtype kept,
        when the radius is 0 or less).
    Shape:
        - masks: (M, H, W), M masks of H x W pixels.
        - Returns: (M, H, W)
    """
    if radius_px <= 0:
        return masks
    sigma = radius_px / 2.0
    size = 2 * round(3 * sigma) + 1
    blurred = kornia.filters.gaussian_blur2d(
        masks[:, None].float(), (size, size), (sigma, sigma), border_type="replicate"
    )
    return blurred[:, 0].clamp(0, 1)


def latent_masks(
    masks: torch.Tensor, frames: int, latent_hw: tuple[int, int], feather_px: float = 0.0
) -> torch.Tensor:
    """The blend weights on the latent grid, in 0..1 (1 = edit, 0 = source).

    Feathered at image resolution (`feather_px`), then area-averaged onto the grid, so a latent cell's
    weight is the share of its 8x8 pixels that may change: a cell half inside the mask is half edit, half
    source. One mask is expanded to every frame (a view, not a copy). Memory: the masks at image size
    plus one blurred copy.

    Args:
        masks: the MASK, float in 0..1, M 1 or `frames` (``check_masks``), any device.
        frames: the clip's frame count F.
        latent_hw: the latent grid (h, w), (H / 8, W / 8) for SD1.5.
        feather_px: the feather radius in image pixels (``feather``); 0 for hard edges.
    Returns:
        float32 weights on the masks' device (``blending.SourceBlend``'s `weights`).
    Shape:
        - masks: (M, H, W), M masks of H x W pixels.
        - Returns: (F, 1, h, w), F frames, h x w latent grid.
    """
    soft = feather(masks.float(), feather_px)
    grid = F.adaptive_avg_pool2d(soft[:, None], latent_hw)
    return grid.expand(frames, -1, -1, -1) if grid.shape[0] == 1 else grid
