"""IP-FaceDiff's two training branches (its section 4): the image-space losses added to the epsilon loss.

- identity (Eq. 5): L_id = l1_weight |x0_hat - y0|_1 + identity_weight D_cos(f(x0_hat), f(y0)), f an
  identity network (faces/identity.py: dlib's ResNet or an ArcFace ONNX file) on the faces aligned by
  their 5 landmarks;
- edit (Eq. 6): the directional CLIP loss (clip_direction.py) between the training image under its
  caption and the prediction under the caption with an attribute edit.

The paper leaves open where the losses act. Here: on the one-step prediction of the clean image,
x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t), decoded by the frozen VAE (with gradient checkpointing
when the UNet has it), for face images at timesteps t <= ``max_timestep`` only (at high t the prediction
is a blur that no identity or CLIP network can read); the epsilon loss stays on every sample and anchors
the UNet. The identity branch reuses the epsilon pass's prediction; the edit branch runs the UNet a second
time on the selected samples under the edited captions. Landmarks are found once per image, before
training (``find_landmarks``), and moved with the augmentation's affine matrix. No ComfyUI import.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..faces.identity import IdentityNetwork
from .clip_direction import DirectionalClipLoss
from .data import Pair, load_image

DETECT_SIZE = 256  # landmarks are found on a copy at least this large (dlib's detector misses small faces)


def predicted_x0(
    alphas_cumprod: torch.Tensor, noisy: torch.Tensor, eps: torch.Tensor, timesteps
) -> torch.Tensor:
    """The one-step estimate of the clean latents [B, 4, h, w] from x_t and the predicted noise."""
    a = alphas_cumprod.to(noisy.device)[timesteps].float().view(-1, 1, 1, 1)
    return (noisy - (1 - a).sqrt() * eps.float()) / a.sqrt()


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents [B, 4, h, w] (scaled as the UNet sees them) -> images [B, 3, 8h, 8w] in about [-1, 1],
    differentiable through the frozen VAE."""
    dtype = next(vae.parameters()).dtype
    return vae.decode((latents / vae.config.scaling_factor).to(dtype)).sample.float()


def find_landmarks(
    pairs: list[Pair], resolution: int, log: Callable[[str], None], cache: Path | None = None
) -> tuple[torch.Tensor, list[Pair]]:
    """dlib's 5 landmarks of the surest face of each image as the training loads it (``load_image`` at
    ``resolution``): float32 [N, 5, 2] pixels, NaN where no face is found; and the pairs without a face.
    The search runs on a copy of at least DETECT_SIZE px, about 30 ms an image on one core. ``cache``: a
    JSON file of earlier results (keyed by file, size, modification time and resolution), read and
    rewritten, so a resumed run finds only new or changed images."""
    from ..faces.dlib_models import face_models

    known = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    size = max(resolution, DETECT_SIZE)
    out = torch.full((len(pairs), 5, 2), float("nan"))
    missed = []
    for index, pair in enumerate(pairs):
        stat = pair.image.stat()
        key = f"{pair.image.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{resolution}"
        if key not in known:
            models = face_models()
            image = ((load_image(pair.image, size) + 1) * 127.5).round().clamp(0, 255).byte()
            image = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
            face = models.main_face(image)
            points = None
            if face is not None:
                found = torch.from_numpy(models.landmarks(image, face, 5))
                points = ((found + 0.5) * (resolution / size) - 0.5).tolist()  # pixel centres at integers
            known[key] = points
        if known[key] is None:
            missed.append(pair)
        else:
            out[index] = torch.tensor(known[key])
    if cache is not None:
        cache.write_text(json.dumps(known))
    if missed:
        log(
            f"{len(missed)} of {len(pairs)} face images have no face dlib finds: they train the epsilon loss only"
        )
    return out, missed


def move_landmarks(landmarks: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Landmarks [B, 5, 2] moved by the augmentation's affine matrices [B, 3, 3]."""
    return landmarks @ matrices[:, :2, :2].transpose(1, 2) + matrices[:, None, :2, 2]


class IdentityObjective:
    """Eq. 5 on the decoded prediction: mean over the given samples of l1_weight * mean |x0_hat - y0| +
    identity_weight * (1 - cos) of the identity network's embeddings."""

    def __init__(self, network: IdentityNetwork, l1_weight: float = 1.0, identity_weight: float = 1.0):
        self.network, self.l1_weight, self.identity_weight = network, l1_weight, identity_weight

    def to(self, device: torch.device) -> IdentityObjective:
        self.network.to(device).eval().requires_grad_(False)
        return self

    def __call__(self, decoded: torch.Tensor, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        l1 = (decoded - images).abs().flatten(1).mean(1)
        identity = self.network.cosine_distance(decoded, images, landmarks)
        return (self.l1_weight * l1 + self.identity_weight * identity).mean()


class EditObjective:
    """Eq. 6: the directional CLIP loss between the prediction under an edited caption and the training
    image under its own caption; one edit phrase drawn per sample (global RNG: resumes exactly)."""

    def __init__(self, loss: DirectionalClipLoss, tokenizer, phrases: tuple[str, ...]):
        self.loss, self.tokenizer, self.phrases = loss, tokenizer, phrases
        self.length = loss.clip.config.text_config.max_position_embeddings

    def to(self, device: torch.device) -> EditObjective:
        self.loss.to(device).eval().requires_grad_(False)
        return self

    def edited(self, captions: list[str]) -> list[str]:
        drawn = torch.randint(len(self.phrases), (len(captions),)).tolist()
        return [
            f"{caption.rstrip(' .,')}, {self.phrases[i]}" for caption, i in zip(captions, drawn, strict=True)
        ]

    def ids(self, captions: list[str], device) -> torch.Tensor:
        return self.tokenizer(
            captions, padding="max_length", max_length=self.length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)

    def __call__(self, decoded, images, captions: list[str], targets: list[str]) -> torch.Tensor:
        device = images.device
        return self.loss(decoded, images, self.ids(captions, device), self.ids(targets, device)).mean()
