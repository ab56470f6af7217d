"""Synthetic clips with known motion for the flow tests, made from the committed astronaut portrait."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

ASSET = Path(__file__).resolve().parent / "assets" / "astronaut_256.jpg"
DEMO_CLIP = Path(__file__).resolve().parents[1] / "workflows" / "media" / "talking_face.mp4"


def demo_frames(count: int, size: int) -> torch.Tensor:
    """The first ``count`` frames of the demo clip (350x350) resized to ``size`` x ``size`` (area
    filter when shrinking, cubic when enlarging), float32 [count, size, size, 3] in 0..1."""
    import av

    with av.open(str(DEMO_CLIP)) as container:
        frames = []
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            filt = cv2.INTER_AREA if size < rgb.shape[0] else cv2.INTER_CUBIC
            frames.append(cv2.resize(rgb, (size, size), interpolation=filt))
            if len(frames) == count:
                break
    return torch.from_numpy(np.stack(frames)).to(torch.float32) / 255.0


def portrait() -> np.ndarray:
    """The 256x256 astronaut portrait, float32 [256, 256, 3] RGB in 0..1."""
    bgr = cv2.imread(str(ASSET), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def shifted_clip(
    frames: int, size: tuple[int, int], step: tuple[int, int], origin: tuple[int, int]
) -> torch.Tensor:
    """A window of ``size`` (h, w) over the portrait that moves by -``step`` (dx, dy) a frame from
    ``origin`` (x, y), so the content moves by +step pixels a frame. Returns [F, h, w, 3]."""
    image = portrait()
    (h, w), (dx, dy), (x0, y0) = size, step, origin
    return torch.from_numpy(
        np.stack([image[y0 - dy * f : y0 - dy * f + h, x0 - dx * f : x0 - dx * f + w] for f in range(frames)])
    )


def warp_matrices(frames: int, degrees: float, zoom: float, size: tuple[int, int]) -> list[np.ndarray]:
    """3x3 maps from portrait pixels to frame-f pixels: rotation by f * degrees and scale zoom ** f
    about the portrait centre, then the centred crop of ``size`` (h, w)."""
    h, w = size
    centre = (127.5, 127.5)
    crop = np.array([[1.0, 0.0, -(127.5 - (w - 1) / 2)], [0.0, 1.0, -(127.5 - (h - 1) / 2)], [0.0, 0.0, 1.0]])
    mats = []
    for f in range(frames):
        affine = np.vstack([cv2.getRotationMatrix2D(centre, degrees * f, zoom**f), [0.0, 0.0, 1.0]])
        mats.append(crop @ affine)
    return mats


def warped_clip(matrices: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """The portrait warped by each 3x3 matrix of ``warp_matrices`` into a frame of ``size`` (h, w)."""
    image = portrait()
    h, w = size
    return torch.from_numpy(
        np.stack(
            [
                cv2.warpAffine(image, m[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                for m in matrices
            ]
        )
    )
