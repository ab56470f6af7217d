"""One face followed through a clip, from per-frame face detections and optical flow.

Detectors see each frame alone: their landmarks jitter by a pixel or two from frame to frame, they miss a
face now and then, and with two faces in view their order changes. A mask drawn from raw detections
flickers and can jump to the other face. Here the chosen face's landmarks are carried from frame to frame
by the optical flow and fused with that frame's detection of the same face:

    propagated_t = L_{t-1} + flow_{t-1 -> t}(L_{t-1})
    L_t = w * detected_t + (1 - w) * propagated_t       (w = detection_weight)

The detection "of the same face" is the one whose landmarks lie nearest the propagated ones, accepted
when their mean distance is under `gate` times the face's eye distance; with none accepted the face is
carried by the flow alone. The fusion is an exponential smoothing along the motion: detector jitter is
averaged over about 1 / w frames, while flow drift is corrected at every detected frame. Frames before the
first frame where the chosen face is found are filled backwards from it with the backward flow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .inputs import PICK_RULES

DETECTED, CARRIED = 1, 2
OUTER_EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class FrameFaces:
    """The faces a detector found in one frame: boxes [K, 4] (x0, y0, x1, y1) px, landmarks [K, 68, 2]."""

    boxes: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def none(cls) -> FrameFaces:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 68, 2), np.float32))


@dataclass(frozen=True)
class FaceTrack:
    """One face through the clip: landmarks [F, 68, 2] px; state [F] uint8: 0 no face, DETECTED (fused
    with a detection), CARRIED (by the flow alone); `most_faces`: the most faces found in one frame (0:
    no face anywhere)."""

    landmarks: np.ndarray
    state: np.ndarray
    most_faces: int = 0

    @property
    def present(self) -> np.ndarray:
        return self.state > 0


def pick_face(faces: FrameFaces, rule: str, index: int) -> int | None:
    """Which of a frame's faces to edit: the `index`-th (0-based) largest box, or counted from the left.
    None when the frame has no such face."""
    if rule not in PICK_RULES:
        raise ValueError(f"pick: {rule!r} is not one of {', '.join(PICK_RULES)}")
    if index >= len(faces.boxes):
        return None
    boxes = faces.boxes
    if rule == "largest":
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
    else:
        order = np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")
    return int(order[index])


def sample_flow(flow: torch.Tensor | np.ndarray, points: np.ndarray) -> np.ndarray:
    """The flow at sub-pixel points: bilinear (OpenCV remap), edges replicated.

    Args:
        flow: the flow (dx, dy) in pixels; a torch tensor must be on the CPU (it is read with ``.numpy()``).
        points: where to read it, (x, y) in pixels of the flow's frame.
    Returns:
        the flow (dx, dy) at each point, float32.
    Shape:
        - flow: (H, W, 2), H x W pixels.
        - points: (P, 2), P points.
        - Returns: (P, 2)
    """
    flow = np.ascontiguousarray(flow.numpy() if isinstance(flow, torch.Tensor) else flow, np.float32)
    xs = np.ascontiguousarray(points[None, :, 0], np.float32)
    ys = np.ascontiguousarray(points[None, :, 1], np.float32)
    return cv2.remap(flow, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]


def fuse(
    propagated: np.ndarray, faces: FrameFaces, detection_weight: float, gate: float
) -> tuple[np.ndarray, int]:
    """The face's landmarks in a frame from their flow-propagated position and the frame's detections.

    The nearest detection (mean landmark distance) matches when that distance is at most `gate` times the
    propagated face's outer eye-corner distance (at least 1 px); its landmarks are then blended with the
    propagated ones.

    Args:
        propagated: the face's landmarks (x, y) in pixels carried into this frame by the flow.
        faces: the frame's detections.
        detection_weight: weight w of the matched detection in the blend (1 - w for the propagated points).
        gate: the match threshold, in eye distances.
    Returns:
        (landmarks, DETECTED) when a detection matches, else (propagated, CARRIED); landmarks float32.
    Shape:
        - propagated: (68, 2)
        - Returns: landmarks (68, 2)
    """
    if len(faces.landmarks):
        distances = np.linalg.norm(faces.landmarks - propagated[None], axis=-1).mean(-1)  # [K]
        nearest = int(np.argmin(distances))
        eyes = float(np.linalg.norm(propagated[OUTER_EYE_CORNERS[0]] - propagated[OUTER_EYE_CORNERS[1]]))
        if distances[nearest] <= gate * max(eyes, 1.0):
            blended = detection_weight * faces.landmarks[nearest] + (1 - detection_weight) * propagated
            return blended.astype(np.float32), DETECTED
    return propagated.astype(np.float32), CARRIED


def track_face(
    detections: Sequence[FrameFaces],
    flows: Iterable[tuple[torch.Tensor, torch.Tensor]],
    rule: str = "largest",
    index: int = 0,
    detection_weight: float = 0.5,
    gate: float = 0.5,
) -> FaceTrack:
    """Follow the face picked by (`rule`, `index`) in the first frame that has it, through every frame.

    Forward from that frame with the forward flow, backward to frame 0 with the backward flow, each frame
    fused with its detections (``fuse``). Memory: one pair's flow, plus the backward flows of the frames
    before the first one with the face (none when it is in frame 0).

    Args:
        detections: one FrameFaces per frame (``face_mask.frame_faces``).
        flows: (forward, backward) flow (dx, dy) in pixels of each consecutive pair, in order, as CPU tensors
            (``flow.trajectories.pair_flows``; F - 1 pairs, consumed once).
        rule: how the faces of a frame are counted, one of ``inputs.PICK_RULES``.
        index: which face, counted by `rule`, from 0.
        detection_weight: weight of a matched detection against the propagated landmarks, in (0, 1].
        gate: the match threshold of ``fuse``, in eye distances.
    Returns:
        the FaceTrack: landmarks (x, y) float32 px (0 where no face), state uint8 per frame, and the most
        faces found in one frame.
    Shape:
        - flows: forward and backward each (H, W, 2), H x W pixels.
        - Returns: landmarks (F, 68, 2) and state (F,), F frames.
    """
    if not 0 < detection_weight <= 1:
        raise ValueError(f"detection_weight: {detection_weight} is outside (0, 1]")
    count = len(detections)
    landmarks = np.zeros((count, 68, 2), np.float32)
    state = np.zeros(count, np.uint8)
    flows = iter(flows)
    anchor = None
    backward_before_anchor: list[torch.Tensor] = []  # [s]: flow of pair (s, s + 1), from s + 1 to s
    for t in range(count):
        forward, backward = next(flows) if t > 0 else (None, None)
        if anchor is not None:
            propagated = landmarks[t - 1] + sample_flow(forward, landmarks[t - 1])
            landmarks[t], state[t] = fuse(propagated, detections[t], detection_weight, gate)
            continue
        if t > 0:
            backward_before_anchor.append(backward)
        picked = pick_face(detections[t], rule, index)
        if picked is None:
            continue
        anchor = t
        landmarks[t], state[t] = detections[t].landmarks[picked], DETECTED
        for s in range(t - 1, -1, -1):
            propagated = landmarks[s + 1] + sample_flow(backward_before_anchor[s], landmarks[s + 1])
            landmarks[s], state[s] = fuse(propagated, detections[s], detection_weight, gate)
        backward_before_anchor.clear()
    return FaceTrack(landmarks, state, max((len(faces.boxes) for faces in detections), default=0))
