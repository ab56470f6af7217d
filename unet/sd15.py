"""Whether a UNet state dict or file is SD1.5's, judged by layout, not size.

A UNet comes in one of two key layouts: ComfyUI/ldm (``input_blocks.0.0.weight``, as inside an SD1.5
checkpoint under ``model.diffusion_model.``) or diffusers (``conv_in.weight``, as in a diffusers ``unet/``
folder). `describe_unet` reads the handful of keys that tell the model family apart in both.
"SD1.5-compatible" means: 768-d cross-attention context, 4 input channels, no pooled-text/size embedding,
1x1-convolution ``proj_in`` and (checked against a reference model by the callers, with `shape_problems`)
SD1.5's blocks; the base channel count may differ (the tests use 32 instead of 320). `check_sd15_file`
and `check_sd15_checkpoint` judge a file from its header alone, before any loader opens it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import TensorInfo, UNetFileError, read_header, unet_part

SD15_CONTEXT_DIM = 768  # CLIP ViT-L/14 text width
SD15_MODEL_CHANNELS = 320
SD15_CHANNEL_MULT = (1, 2, 4, 4)
SD15_HEADS = 8
# Metadata keys that may state the prediction target (ours, and the Stability AI model spec's).
PREDICTION_METADATA = ("diffferv.prediction_type", "modelspec.prediction_type")
EPSILON_NAMES = ("epsilon", "eps")
CHECKPOINT_PARTS = (("CLIP text encoder", "cond_stage_model."), ("VAE", "first_stage_model."))
"""What a single-file SD checkpoint holds besides its UNet: (part, key prefix)."""
DIT_FAMILIES = (("double_blocks.", "Flux"), ("joint_blocks.", "SD3"))
"""Key prefixes of diffusion transformers (no UNet), with their family name for messages."""


def check_sd15_file(path: Path, name: str | None = None) -> dict[str, TensorInfo]:
    """Raise UNetFileError unless `path` is a whole .safetensors file holding an SD1.5 UNet (UNet-only or
    a full checkpoint), judged from its header alone (see `read_header`; messages name it as `name`).
    Returns the header's tensors."""
    name = name or Path(path).name
    tensors, metadata = read_header(path, name)
    check_sd15(describe_unet(unet_part(tensors), name), metadata, name)
    return tensors


def check_sd15_checkpoint(path: Path, name: str | None = None) -> None:
    """`check_sd15_file`, and the file must be a full single-file checkpoint: UNet, CLIP text encoder
    and VAE."""
    name = name or Path(path).name
    tensors = check_sd15_file(path, name)
    missing = [part for part, prefix in CHECKPOINT_PARTS if not any(k.startswith(prefix) for k in tensors)]
    if missing:
        raise UNetFileError(
            f"{name} holds no {' and no '.join(missing)}: it is not a full SD1.5 checkpoint (UNet, CLIP and "
            "VAE in one file)."
        )


@dataclass(frozen=True)
class UNetLayout:
    """What a UNet state dict says about its architecture (read from a few keys, either key layout)."""

    key_layout: str  # "ldm" (ComfyUI / original SD) or "diffusers"
    model_channels: int  # width of the first level (SD1.5: 320)
    in_channels: int  # latent channels in (SD1.5: 4; inpainting: 9)
    context_dim: int | None  # width of the cross-attention context (None: no cross-attention)
    adm_channels: int | None  # input width of a pooled-text/size embedding (SDXL: 2816), None if absent
    linear_proj: bool | None  # transformer proj_in is a Linear (SD2, SDXL) rather than a 1x1 conv

    def summary(self) -> str:
        parts = [
            f"{self.key_layout} key layout",
            f"{self.model_channels} base channels",
            f"{self.in_channels} input channels",
            "no cross-attention" if self.context_dim is None else f"{self.context_dim}-d context",
        ]
        if self.adm_channels is not None:
            parts.append(f"pooled/size embedding of {self.adm_channels} inputs")
        if self.linear_proj is not None:
            parts.append("linear proj_in" if self.linear_proj else "conv proj_in")
        return ", ".join(parts)

    def family(self) -> str:
        """The model family these facts point to, for error messages ('' when none is recognised)."""
        if self.context_dim == 2048 or self.adm_channels == 2816:
            return "SDXL"
        if self.context_dim == 1280 and self.adm_channels == 2560:
            return "SDXL refiner"
        if self.context_dim == 1024:
            return "SD2.x unCLIP" if self.adm_channels else "SD2.x"
        if self.in_channels == 9:
            return "inpainting"
        if self.in_channels == 8:
            return "instruct-pix2pix"
        return ""

    def sd15_problems(self) -> list[str]:
        """How this layout differs from SD1.5's (empty when it matches)."""
        problems = []
        if self.context_dim != SD15_CONTEXT_DIM:
            problems.append(f"cross-attention context must be {SD15_CONTEXT_DIM}-d (CLIP-L)")
        if self.in_channels != 4:
            problems.append("it must take 4 latent channels")
        if self.adm_channels is not None:
            problems.append("SD1.5 has no pooled-text/size embedding")
        if self.linear_proj:
            problems.append("SD1.5's transformer proj_in is a 1x1 convolution")
        if self.model_channels % 32:
            problems.append("base channels must be a multiple of 32 (GroupNorm groups)")
        return problems


# (ldm key, diffusers keys) for the facts `describe_unet` reads
_CONV_IN = ("input_blocks.0.0.weight", ("conv_in.weight",))
_ADM = ("label_emb.0.0.weight", ("add_embedding.linear_1.weight", "class_embedding.linear_1.weight"))


def describe_unet(state_dict: Mapping[str, torch.Tensor | TensorInfo], name: str) -> UNetLayout:
    """Read the architecture facts of a UNet state dict (prefix already removed, see `unet_part`), or of
    a header's TensorInfos (only shapes are read).
    Raises UNetFileError when the file holds no UNet at all (a LoRA, a text encoder, a DiT...)."""
    if _CONV_IN[0] in state_dict:
        layout, conv_in = "ldm", state_dict[_CONV_IN[0]]
        adm = state_dict.get(_ADM[0])
    elif _CONV_IN[1][0] in state_dict:
        layout, conv_in = "diffusers", state_dict[_CONV_IN[1][0]]
        adm = next((state_dict[k] for k in _ADM[1] if k in state_dict), None)
    else:
        keys = sorted(state_dict)
        family = next(
            (family for prefix, family in DIT_FAMILIES if any(k.startswith(prefix) for k in keys)), ""
        )
        if family:
            raise UNetFileError(
                f"{name}: not an SD1.5 UNet. Found a {family} diffusion transformer ({len(keys)} tensors, keys "
                f"like {keys[0]}). DiffFERV edits with SD1.5; load other models with ComfyUI's Load "
                "Diffusion Model or Load Checkpoint nodes."
            )
        if any("lora" in k for k in keys):
            what = "it holds LoRA weights: load it with a LoRA loader (after this node, on its MODEL)"
        else:
            what = f"its keys look like {', '.join(keys[:3]) or '(none)'}"
        raise UNetFileError(
            f"{name}: no UNet found (neither ComfyUI/ldm 'input_blocks.0.0.weight' nor diffusers "
            f"'conv_in.weight'); {what}."
        )
    context = next((v for k, v in sorted(state_dict.items()) if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((v for k, v in sorted(state_dict.items()) if k.endswith("proj_in.weight")), None)
    return UNetLayout(
        key_layout=layout,
        model_channels=int(conv_in.shape[0]),
        in_channels=int(conv_in.shape[1]),
        context_dim=None if context is None else int(context.shape[1]),
        adm_channels=None if adm is None else int(adm.shape[1]),
        linear_proj=None if proj_in is None else proj_in.ndim == 2,
    )


def check_sd15(layout: UNetLayout, metadata: Mapping[str, str], name: str) -> None:
    """Raise UNetFileError unless the layout facts and the file's stated prediction target are SD1.5's."""
    problems = layout.sd15_problems()
    if problems:
        family = layout.family()
        looks_like = f" This looks like an {family} UNet." if family else ""
        raise UNetFileError(
            f"{name}: not an SD1.5 UNet. Found {layout.summary()}.{looks_like} Needed: "
            f"{'; '.join(problems)}. DiffFERV edits with SD1.5; load other models with ComfyUI's Load "
            "Diffusion Model or Load Checkpoint nodes."
        )
    for key in PREDICTION_METADATA:
        value = metadata.get(key)
        if value is not None and value.lower() not in EPSILON_NAMES:
            raise UNetFileError(
                f"{name}: its metadata says {key}={value}; DiffFERV's inversion and sampling need an "
                "epsilon-prediction SD1.5 UNet."
            )


def shape_problems(
    found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor | torch.Size], expected_name: str
) -> list[str]:
    """Differences between a state dict and a reference one (missing keys, unexpected keys, shape
    mismatches), each as one line with a few examples; empty when keys and shapes all agree."""

    def shape(v):
        return tuple(v.shape if isinstance(v, torch.Tensor) else v)

    lines = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(found) & set(expected) if shape(found[k]) != shape(expected[k]))
    if missing:
        lines.append(f"{len(missing)} weights of {expected_name} are missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        lines.append(
            f"{len(unexpected)} weights are not in {expected_name} (e.g. {', '.join(unexpected[:3])})"
        )
    if wrong:
        examples = ", ".join(f"{k}: {shape(found[k])} vs {shape(expected[k])}" for k in wrong[:3])
        lines.append(f"{len(wrong)} weights have other shapes than in {expected_name} (e.g. {examples})")
    return lines
