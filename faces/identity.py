"""Identity networks as differentiable losses: dlib's face ResNet or an InsightFace ArcFace ONNX file, each
with the alignment of dlib's 5 landmarks to its own face template (IP-FaceDiff's identity term, Eq. 5).

An ``IdentityNetwork`` cuts face chips out of images [N, 3, H, W] in [-1, 1] by a similarity transform
fitted (least squares) from the 5 landmarks to the network's template and applied with kornia's
bilinear ``warp_affine`` (differentiable in the image), then embeds them; ``cosine_distance`` is
1 - cos of two images' embeddings. The landmarks are found once per image (dlib, not differentiable);
the same transform then cuts the real face and the prediction.

Templates (pixel centres at integer coordinates, as kornia's ``align_corners=True``):
- dlib: its mean face of the 5-point model (numbers from dlib's ``get_face_chip_details``), with dlib's
  chip padding 0.25 on 150 px chips, as ``dlib.get_face_chip(image, shape, 150, 0.25)`` cuts them.
- ArcFace: InsightFace's 112 px template gives the eye centres (38.29, 51.70) and (73.53, 51.50); dlib's
  mean face, placed on them by its own eye centres (the mean of each eye's two corners), gives the 5
  targets. (ArcFace's other points, nose tip and mouth corners, are not among dlib's 5.)

dlib's network is public domain; InsightFace's ArcFace files are licensed for non-commercial research
only (``INSIGHTFACE_LICENCE``). No ComfyUI import, nothing of the pack outside faces/.
"""

from __future__ import annotations

from pathlib import Path

import torch
from kornia.geometry.transform import warp_affine

from .onnx_graph import OnnxGraph, UnsupportedOnnxError
from .resnet import INPUT_SIZE as DLIB_SIZE
from .resnet import FaceResNet

DLIB_MEAN_FACE = torch.tensor(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=torch.float64,
)
"""dlib's 5 landmarks (two corners of the image-right eye, of the image-left eye, the base of the nose)
on its canonical face, in units of the face box."""
DLIB_PADDING = 0.25
ARCFACE_SIZE = 112
ARCFACE_EYES = torch.tensor([[73.5318, 51.5014], [38.2946, 51.6963]], dtype=torch.float64)
"""InsightFace's 112 px template: image-right eye centre, image-left eye centre (dlib's eye order)."""
INSIGHTFACE_LICENCE = (
    "InsightFace's ArcFace models (buffalo_l, antelopev2 and others from its model zoo) are licensed for "
    "non-commercial research use only; a UNet trained with their identity loss is bound by that licence. "
    "dlib's face ResNet (--identity-model dlib) is in the public domain."
)


def fit_similarity(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, shift) taking points ``source`` [N, K, 2] onto
    ``target`` [K, 2]: affine matrices [N, 2, 3]. In complex numbers, w = a z + b with
    a = sum (w - mean w) conj(z - mean z) / sum |z - mean z|^2."""
    z = torch.complex(source[..., 0].double(), source[..., 1].double())
    w = torch.complex(target[:, 0].double(), target[:, 1].double()).to(z.device)
    z_centred, w_centred = z - z.mean(-1, keepdim=True), w - w.mean()
    a = (w_centred * z_centred.conj()).sum(-1) / (z_centred.abs() ** 2).sum(-1)
    b = w.mean() - a * z.mean(-1)
    rows = [torch.stack([a.real, -a.imag, b.real], -1), torch.stack([a.imag, a.real, b.imag], -1)]
    return torch.stack(rows, -2).to(source.dtype)


def dlib_targets(size: int = DLIB_SIZE, padding: float = DLIB_PADDING) -> torch.Tensor:
    """Where dlib's chip puts the 5 landmarks: [5, 2] pixels of a ``size`` chip with ``padding``."""
    return (padding + DLIB_MEAN_FACE) / (2 * padding + 1) * size


def arcface_targets() -> torch.Tensor:
    """dlib's mean face placed on ArcFace's eye centres by its own eye centres: [5, 2] pixels of 112."""
    eyes = torch.stack([DLIB_MEAN_FACE[0:2].mean(0), DLIB_MEAN_FACE[2:4].mean(0)])
    matrix = fit_similarity(eyes[None], ARCFACE_EYES)[0]
    return DLIB_MEAN_FACE @ matrix[:, :2].T + matrix[:, 2]


class IdentityNetwork(torch.nn.Module):
    """Base: ``align`` cuts chips, ``embed`` maps chips [N, 3, size, size] in [-1, 1] to embeddings."""

    name: str
    size: int
    licence: str | None = None

    def __init__(self, targets: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("targets", targets.float())

    def align(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Face chips [N, 3, size, size] of ``images`` [N, 3, H, W] by ``landmarks`` [N, 5, 2] (x, y pixels
        of the images), bilinear, borders repeated; differentiable in ``images``."""
        matrix = fit_similarity(landmarks.to(self.targets), self.targets)
        return warp_affine(
            images, matrix.to(images.dtype), (self.size, self.size), "bilinear", "border", align_corners=True
        )

    def embed(self, chips: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cosine_distance(self, a: torch.Tensor, b: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """1 - cos between the embeddings of the faces of images ``a`` and ``b`` [N, 3, H, W] (same
        landmarks [N, 5, 2]): [N], 0 for the same embedding, up to 2."""
        chips = self.align(torch.cat([a, b]), torch.cat([landmarks, landmarks]))
        first, second = self.embed(chips).chunk(2)
        return 1.0 - torch.nn.functional.cosine_similarity(first, second, dim=-1)


class DlibIdentity(IdentityNetwork):
    """dlib's face ResNet (128-d), differentiable (faces/resnet.py ``descriptors``)."""

    name, size = "dlib", DLIB_SIZE

    def __init__(self, resnet: FaceResNet) -> None:
        super().__init__(dlib_targets())
        self.resnet = resnet

    def to(self, device, *args, **kwargs):  # the ResNet holds plain tensors, not module buffers
        self.resnet.to(device)
        return super().to(device, *args, **kwargs)

    def embed(self, chips: torch.Tensor) -> torch.Tensor:
        return self.resnet.descriptors((chips.float() + 1.0) * 127.5)


class ArcFaceIdentity(IdentityNetwork):
    """An InsightFace ArcFace ONNX graph (112 px RGB; (pixel - 127.5) / 127.5, which is the [-1, 1] image
    itself, unless the graph begins with its own Sub/Mul, which then gets the pixels)."""

    size = ARCFACE_SIZE
    licence = INSIGHTFACE_LICENCE

    def __init__(self, path: str | Path) -> None:
        super().__init__(arcface_targets())
        self.graph = OnnxGraph(path)
        self.name = Path(path).name
        shape = self.graph.input_shape
        if len(shape) != 4 or tuple(shape[1:]) != (3, ARCFACE_SIZE, ARCFACE_SIZE):
            raise UnsupportedOnnxError(
                f"{path}: takes input {shape}, not faces [N, 3, 112, 112]: not an ArcFace recognition model "
                "(InsightFace's detection and landmark files share its folder; pick w600k_r50.onnx or "
                "glintr100.onnx)"
            )
        self.raw_pixels = self.graph.input_consumers in (["Sub"], ["Mul"])

    def embed(self, chips: torch.Tensor) -> torch.Tensor:
        return self.graph((chips + 1.0) * 127.5 if self.raw_pixels else chips)
