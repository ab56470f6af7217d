"""Face regions drawn from 68-point landmarks (the iBUG 300-W layout dlib's shape predictor gives):
0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth.

- "face": the convex hull of all 68 points (jaw to brows);
- "face+hair": the face hull plus the forehead and hair above it: the jaw line turned up over the brow line,
  0.8 as high and 15 % wider, so the region reaches the top of the head;
- any region grown by N pixels (a disc dilation).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .inputs import REGIONS

JAW = slice(0, 17)
HEAD_ABOVE_BROWS = 0.8  # top of the head above the brows, as a share of brows-to-chin
HAIR_WIDTH = 1.15  # hair beside the face, as a share of the jaw's width
BROWS = slice(17, 27)


def region_polygon(landmarks: np.ndarray, region: str) -> np.ndarray:
    """The polygon of `region` for one face: the convex hull of its landmarks (see the module docstring).

    Raises ValueError for a region not in ``inputs.REGIONS``.

    Args:
        landmarks: the face's 68 landmarks (x, y) in pixels (iBUG 300-W order).
        region: "face" or "face+hair".
    Returns:
        the hull's points (x, y) in pixels, float32.
    Shape:
        - landmarks: (68, 2)
        - Returns: (P, 2), P hull points.
    """
    points = np.asarray(landmarks, np.float32)
    if region == "face+hair":
        brow_line = points[BROWS].mean(0)
        up = brow_line - points[JAW].mean(0)  # from the jaw's centre towards the brows
        up /= max(float(np.linalg.norm(up)), 1e-6)
        relative = points[JAW] - brow_line
        along = relative @ up  # negative: the jaw is below the brows
        across = relative - along[:, None] * up[None]
        # the jaw line turned up over the brows, 0.8 as high (top of the head) and 15 % wider (hair)
        crown = brow_line + (-HEAD_ABOVE_BROWS * along)[:, None] * up[None] + HAIR_WIDTH * across
        points = np.concatenate([points, crown])
    elif region != "face":
        raise ValueError(f"region: {region!r} is not one of {', '.join(REGIONS)}")
    return cv2.convexHull(points).reshape(-1, 2)


def region_masks(
    landmarks: np.ndarray, present: np.ndarray, image_hw: tuple[int, int], region: str, grow_px: int = 0
) -> torch.Tensor:
    """MASK frames of one face: its region filled in every frame that has it, grown by `grow_px`.

    One polygon fill per frame (OpenCV, 1/16 px vertex precision), then one disc dilation per frame.

    Args:
        landmarks: the face's 68 landmarks (x, y) in pixels, per frame.
        present: bool, whether the frame has the face (frames without it get an empty mask).
        image_hw: the frames' (height, width) in pixels.
        region: "face" or "face+hair" (``region_polygon``).
        grow_px: pixels the region is grown by on every side; 0 for none.
    Returns:
        float32 masks on the CPU in {0, 1} (1 = the region).
    Shape:
        - landmarks: (F, 68, 2), F frames.
        - present: (F,)
        - Returns: (F, H, W), H x W pixels.
    """
    height, width = image_hw
    masks = np.zeros((len(landmarks), height, width), np.uint8)
    for index in np.flatnonzero(present):
        polygon = np.round(region_polygon(landmarks[index], region) * 16).astype(np.int32)  # 4 fraction bits
        cv2.fillConvexPoly(masks[index], polygon, 1, lineType=cv2.LINE_8, shift=4)
    if grow_px > 0:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1, 2 * grow_px + 1))
        masks = np.stack([cv2.dilate(mask, disc) for mask in masks]) if len(masks) else masks
    return torch.from_numpy(masks).float()
