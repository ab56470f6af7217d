"""The mask of one face through a clip: faces found in every frame (faces.dlib_models: HOG detector and
68 landmarks), the chosen face followed with the optical flow (tracking.py), its region drawn (regions.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..faces.dlib_models import FaceModels, to_uint8
from ..flow.backends import FlowBackend
from ..flow.trajectories import pair_flows
from .regions import region_masks
from .tracking import FaceTrack, FrameFaces, track_face

FrameHook = Callable[[int], None]
"""Called with the count of frames done (progress, interruption)."""


def frame_faces(models: FaceModels, frame: np.ndarray) -> FrameFaces:
    """Every face of one uint8 RGB frame [H, W, 3] with its 68 landmarks, small ones beside large ones
    (the face to edit need not be the largest)."""
    faces = models.detect(frame, all_sizes=True)
    if not faces:
        return FrameFaces.none()
    boxes = np.array([(f.left, f.top, f.right, f.bottom) for f in faces], np.float32)
    landmarks = np.stack([models.landmarks(frame, face, 68) for face in faces])
    return FrameFaces(boxes, landmarks)


def face_masks(
    frames: torch.Tensor,
    models: FaceModels,
    backend: FlowBackend,
    region: str,
    grow_px: int = 0,
    rule: str = "largest",
    index: int = 0,
    on_frame: FrameHook | None = None,
) -> tuple[torch.Tensor, FaceTrack]:
    """MASK [F, H, W] of the face picked by (`rule`, `index`) in IMAGE frames [F, H, W, 3], and its track.

    Two passes over the clip: detection in every frame, then the flow of each consecutive pair while the
    face is followed; the hook counts both (2F - 1 in all). Memory: the clip as uint8 and the masks."""
    pixels = to_uint8(frames)
    detections = []
    for done, frame in enumerate(pixels, 1):
        detections.append(frame_faces(models, frame))
        if on_frame is not None:
            on_frame(done)

    def flows():
        for done, pair in enumerate(pair_flows(frames, backend), len(frames) + 1):
            if on_frame is not None:
                on_frame(done)
            yield pair

    track = track_face(detections, flows(), rule, index)
    masks = region_masks(track.landmarks, track.present, tuple(frames.shape[1:3]), region, grow_px)
    return masks, track
