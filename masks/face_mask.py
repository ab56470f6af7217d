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
    """Every face of one frame with its 68 landmarks, small ones beside large ones.

    The detector's 2x upsampled search always runs (``all_sizes``): the face to edit need not be the
    largest.

    Args:
        models: the dlib face models (HOG detector and 68-point shape predictor).
        frame: the frame, uint8 RGB, C-contiguous (``faces.dlib_models.to_uint8``).
    Returns:
        the frame's faces: boxes (x0, y0, x1, y1) and landmarks (x, y), both float32 in pixels; none when
        no face is found.
    Shape:
        - frame: (H, W, 3), H x W pixels.
        - Returns: boxes (K, 4) and landmarks (K, 68, 2), K faces.
    """
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
    """The MASK of the face picked by (`rule`, `index`) in IMAGE frames, and its track.

    Two passes over the clip: detection in every frame, then the flow of each consecutive pair while the
    face is followed; the hook counts both (2F - 1 in all). Memory: the clip as uint8 and the masks.

    Args:
        frames: ComfyUI IMAGE, float RGB in 0..1, any device.
        models: the dlib face models (HOG detector and 68-point shape predictor).
        backend: the optical flow backend the face is followed with.
        region: the face region drawn, one of ``inputs.REGIONS``.
        grow_px: pixels the region is grown by on every side.
        rule: how the faces of a frame are counted, one of ``inputs.PICK_RULES``.
        index: which face, counted by `rule`, from 0.
        on_frame: the progress/interrupt hook, called with the count of frames done; None for none.
    Returns:
        (masks, track): float32 masks on the CPU in {0, 1} (1 = the face; all 0 in frames without it),
        and the face's FaceTrack.
    Shape:
        - frames: (F, H, W, 3), F frames of H x W pixels.
        - Returns: masks (F, H, W); track landmarks (F, 68, 2) and state (F,).
    """
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
