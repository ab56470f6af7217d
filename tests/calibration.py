"""Copies of a clip for calibrating the edit report: re-encoded, blurred, shuffled, and with another person's
face, each measured against the clip (tests/test_edit_report_calibration.py, the table in its note)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from comfyui_diffferv.faces.dlib_models import FaceModels, to_uint8
from comfyui_diffferv.video.decode import read_clip
from comfyui_diffferv.video.encode import FORMATS, write_video

DONOR = Path(__file__).resolve().parent / "assets" / "astronaut_256.jpg"
"""Another person's face: Eileen Collins' NASA portrait (public domain, tests/assets/SOURCES.md)."""
JAW_AND_BROWS = list(range(17)) + list(range(26, 16, -1))
"""The 68-point outline of a face: jaw from left to right, then the brows back from right to left."""


def reencoded(frames: torch.Tensor, quality: int = 65) -> torch.Tensor:
    """``frames`` written as h264 mp4 at the Video Combine node's default quality, decoded again."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reencoded.mp4"
        write_video(path, frames, 25.0, FORMATS["mp4 (h264)"], quality)
        decoded = read_clip(path, 0).frames
    return decoded[:, : frames.shape[1], : frames.shape[2]]


def blurred(frames: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """A Gaussian blur of ``sigma`` px on every frame."""
    return torch.from_numpy(np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames.numpy()]))


def shuffled(frames: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The frames in a random order with no frame left in its place."""
    count = frames.shape[0]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    order = torch.where(order == torch.arange(count), order.roll(1), order)
    return frames[order]


def other_face(frames: torch.Tensor, models: FaceModels, donor: Path = DONOR) -> torch.Tensor:
    """Every frame with the main face replaced by the donor's, the way a face swap does it.

    Per frame: the donor portrait is aligned to the frame's face by a similarity transform of their 5
    landmarks (eye corners, nose), its colours are matched to the frame's face (mean and spread per
    channel inside the face), and it is blended in over the donor's face outline (jaw and brows of its
    68 landmarks, moved by the same transform) with a feathered edge. Hair, background and motion stay
    the clip's; frames without a detected face stay as they are.
    """
    portrait = cv2.cvtColor(cv2.imread(str(donor), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    donor_face = models.main_face(portrait)
    donor_eyes_nose = models.landmarks(portrait, donor_face, 5)
    donor_outline = models.landmarks(portrait, donor_face, 68)[JAW_AND_BROWS]
    out = []
    for frame in to_uint8(frames):
        face = models.main_face(frame)
        if face is None:
            out.append(frame)
            continue
        matrix, _ = cv2.estimateAffinePartial2D(donor_eyes_nose, models.landmarks(frame, face, 5))
        height, width = frame.shape[:2]
        warped = cv2.warpAffine(portrait, matrix, (width, height), flags=cv2.INTER_LINEAR)
        outline = cv2.transform(donor_outline[None], matrix)[0]
        mask = np.zeros((height, width), np.float32)
        cv2.fillPoly(mask, [np.round(outline).astype(np.int32)], 1.0)
        inside = mask > 0
        frame_f, warped_f = frame.astype(np.float32), warped.astype(np.float32)
        scale = frame_f[inside].std(axis=0) / np.maximum(warped_f[inside].std(axis=0), 1.0)
        warped_f = (warped_f - warped_f[inside].mean(axis=0)) * scale + frame_f[inside].mean(axis=0)
        feather = max(1.0, face.width / 25)
        mask = cv2.GaussianBlur(
            cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=round(feather)), (0, 0), feather
        )
        blended = frame_f * (1 - mask[..., None]) + warped_f * mask[..., None]
        out.append(np.clip(blended, 0, 255).round().astype(np.uint8))
    return torch.from_numpy(np.stack(out)).float() / 255.0
