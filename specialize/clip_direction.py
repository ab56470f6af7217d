"""IP-FaceDiff's edit branch loss (its Eq. 6, after StyleGAN-NADA): a directional CLIP loss, from a local
two-tower CLIP file in transformers' key layout.

    L_dir = lambda1 * |f_I(y_gen) - f_I(y_ref)|_2
          + lambda2 * [1 - cos(f_I(y_gen) - f_I(y_ref), f_T(p_tar) - f_T(p_ref))]

f_I / f_T: CLIP's image / text embeddings, projected and L2-normalised (as CLIP compares them); y_ref the
training image (here also the paper's y0), y_gen the UNet's one-step prediction of it under the edited
caption p_tar, p_ref the image's own caption. lambda1 = 0.3, lambda2 = 0.7 (the paper's).

The CLIP file (e.g. ``models/clip_vision/clip_vision_l.safetensors`` holding OpenAI ViT-L/14's both towers)
is read into transformers' ``CLIPModel`` (differentiable; ComfyUI's CLIP vision code is not: it rounds the
input to 8 bits and adds in place). Its config is read from the weights (widths, depths, patch and image
size, projection); the head count is not in the weights and is taken as width / 64, the head width of
every OpenAI and OpenCLIP model. A vision-only file (IPAdapter's image encoders) or a text encoder without
its projection (SD1.5's) cannot give the text direction and is refused by name. No ComfyUI import.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

from ..unet.files import read_header, read_safetensors

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 64
EDIT_PHRASES = (
    "old",
    "young",
    "smiling",
    "angry",
    "surprised",
    "with eyeglasses",
    "with a beard",
    "with a mustache",
    "with blond hair",
    "with black hair",
    "with gray hair",
    "with bangs",
    "bald",
    "with heavy makeup",
    "as a man",
    "as a woman",
)
"""Built-in edits: CelebA attributes the paper edits (age, gender, expression, hair colour, glasses,
beard), appended to the image's caption as ``"{caption}, {phrase}"``."""


class ClipFileError(ValueError):
    """The CLIP file cannot give the edit loss; the message names it and says what to use."""


def check_clip_file(path: Path) -> None:
    """Refuse (ClipFileError) from the header alone a file that is not a two-tower CLIP in transformers'
    layout: vision-only encoders, text encoders without a projection, other layouts."""
    path = Path(path)
    if not path.is_file():
        raise ClipFileError(f"--clip {path}: file not found")
    keys = set(read_header(path)[0])
    has_text = any(k.startswith("text_model.") for k in keys) and "text_projection.weight" in keys
    has_vision = any(k.startswith("vision_model.") for k in keys) and "visual_projection.weight" in keys
    if has_text and has_vision:
        return
    if any(k.startswith("vision_model.") for k in keys) and not any(
        k.startswith("text_model.") for k in keys
    ):
        raise ClipFileError(
            f"--clip {path.name}: a vision-only CLIP (image encoder, e.g. IPAdapter's): the edit loss needs the "
            "text tower too, for the direction between captions. Give a two-tower CLIP in transformers' layout "
            "(text_model.*, vision_model.*, text_projection, visual_projection), e.g. OpenAI's ViT-L/14 "
            "model.safetensors."
        )
    if any(k.startswith("text_model.") for k in keys) and "text_projection.weight" not in keys:
        raise ClipFileError(
            f"--clip {path.name}: a CLIP text encoder without its projection (like SD1.5's): the edit loss needs "
            "both towers and their projections into the shared space. Give a two-tower CLIP file."
        )
    raise ClipFileError(
        f"--clip {path.name}: not a CLIP model in transformers' key layout (no text_model.* / vision_model.* "
        "with their projections)"
    )


def _layers(keys, prefix: str) -> int:
    found = {
        int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))
    }
    return max(found) + 1


def load_clip(path: Path):
    """The two-tower ``CLIPModel`` of a checked file, frozen, in eval mode, config read from its weights."""
    from transformers import CLIPConfig, CLIPModel

    check_clip_file(path)
    weights, _ = read_safetensors(path)
    text_width = weights["text_model.embeddings.token_embedding.weight"].shape[1]
    patch = weights["vision_model.embeddings.patch_embedding.weight"]
    vision_width, patch_size = patch.shape[0], patch.shape[2]
    positions = weights["vision_model.embeddings.position_embedding.weight"].shape[0]
    config = CLIPConfig(
        text_config={
            "vocab_size": weights["text_model.embeddings.token_embedding.weight"].shape[0],
            "hidden_size": text_width,
            "intermediate_size": weights["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            "num_hidden_layers": _layers(weights, "text_model."),
            "num_attention_heads": max(1, text_width // HEAD_WIDTH),
            "max_position_embeddings": weights["text_model.embeddings.position_embedding.weight"].shape[0],
        },
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": weights["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            "num_hidden_layers": _layers(weights, "vision_model."),
            "num_attention_heads": max(1, vision_width // HEAD_WIDTH),
            "patch_size": patch_size,
            "image_size": round((positions - 1) ** 0.5) * patch_size,
        },
        projection_dim=weights["visual_projection.weight"].shape[0],
    )
    model = CLIPModel(config)
    expected = model.state_dict()
    weights = {k: v.float() for k, v in weights.items() if k in expected}  # position_ids of old files dropped
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ClipFileError(f"--clip {Path(path).name}: lacks {', '.join(missing[:4])}")
    model.load_state_dict(weights, strict=True)
    return model.eval().requires_grad_(False)


class DirectionalClipLoss(torch.nn.Module):
    """``loss(generated, reference, reference_ids, target_ids)`` -> [N] per-image L_dir. Images
    [N, 3, H, W] in [-1, 1] (resized to CLIP's input size, antialiased, normalised); token ids [N, L] of
    the captions and the edited captions. Gradient reaches ``generated`` only."""

    def __init__(self, clip, lambda1: float = 0.3, lambda2: float = 0.7) -> None:
        super().__init__()
        self.clip, self.lambda1, self.lambda2 = clip, lambda1, lambda2
        self.size = clip.config.vision_config.image_size
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate((images.float() + 1) / 2, (self.size, self.size), mode="bicubic", antialias=True)
        pooled = self.clip.vision_model(pixel_values=(x - self.mean) / self.std).pooler_output
        return F.normalize(self.clip.visual_projection(pooled), dim=-1)

    def text_features(self, ids: torch.Tensor) -> torch.Tensor:
        pooled = self.clip.text_model(input_ids=ids).pooler_output
        return F.normalize(self.clip.text_projection(pooled), dim=-1)

    def forward(self, generated, reference, reference_ids, target_ids) -> torch.Tensor:
        with torch.no_grad():
            source = self.image_features(reference)
            texts = self.text_features(torch.cat([reference_ids, target_ids]))
        text_direction = texts[len(reference_ids) :] - texts[: len(reference_ids)]
        image_direction = self.image_features(generated) - source
        content = torch.linalg.vector_norm(image_direction, dim=-1)
        direction = 1.0 - F.cosine_similarity(image_direction, text_direction, dim=-1)
        return self.lambda1 * content + self.lambda2 * direction


def read_edit_phrases(path: Path | None) -> tuple[str, ...]:
    """Edit phrases, one a line (blank lines and # comments skipped), or the built-in list."""
    if path is None:
        return EDIT_PHRASES
    path = Path(path)
    if not path.is_file():
        raise ClipFileError(f"--edit-phrases {path}: file not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    phrases = tuple(line for line in lines if line and not line.startswith("#"))
    if not phrases:
        raise ClipFileError(f"--edit-phrases {path}: no phrases (one edit a line, e.g. 'with eyeglasses')")
    return phrases
