"""Writes workflows/media/two_faces.mp4, the demo clip of the "edit one face" workflow, from the pack's
own media: the talking face of workflows/media/talking_face.mp4 (left) beside the astronaut portrait of
tests/assets/astronaut_256.jpg swaying slowly sideways (right). 48 frames, 512x256, 25 fps.

    .venv/bin/python tests/make_two_faces_clip.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FRAMES, SIDE, FPS, SWAY_PX = 48, 256, 25.0, 6.0
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402, F401  (registers the pack as comfyui_diffferv)


def two_faces() -> torch.Tensor:
    """IMAGE frames [48, 256, 512, 3]: the talking face, area-resized to 256 px, and the portrait shifted
    by 6 px * sin(2 pi t / 48) (edges reflected)."""
    from comfyui_diffferv.video.decode import read_clip

    talking = read_clip(ROOT / "workflows" / "media" / "talking_face.mp4", FRAMES).frames
    left = torch.nn.functional.interpolate(talking.movedim(-1, 1), size=(SIDE, SIDE), mode="area").movedim(
        1, -1
    )
    portrait = np.array(Image.open(ROOT / "tests" / "assets" / "astronaut_256.jpg").convert("RGB"))
    right = []
    for t in range(FRAMES):
        shift = np.float32([[1, 0, SWAY_PX * math.sin(2 * math.pi * t / FRAMES)], [0, 1, 0]])
        right.append(
            cv2.warpAffine(
                portrait, shift, (SIDE, SIDE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
            )
        )
    right = torch.from_numpy(np.stack(right)).float() / 255
    return torch.cat([left, right], dim=2).clamp(0, 1)


if __name__ == "__main__":
    from comfyui_diffferv.video.encode import FORMATS, write_video

    target = ROOT / "workflows" / "media" / "two_faces.mp4"
    write_video(target, two_faces(), FPS, FORMATS["mp4 (h264)"], quality=65)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")
