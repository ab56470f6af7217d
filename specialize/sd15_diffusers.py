"""The SD1.5 parts the specialization command trains with, as diffusers/transformers models, built offline.

A base model comes from a single-file SD1.5 checkpoint (.safetensors, original key layout) or a diffusers
folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/). diffusers' own single-file loader fetches its
config files from the Hugging Face Hub; nothing may be downloaded here, so the SD1.5 configs are written
below (the published SD1.5 / CLIP ViT-L/14 numbers) and only diffusers' key-conversion helpers are used.
The widths are read from the file, so a smaller model of the same layout (the tests') loads too.
No ComfyUI import: the command runs as a plain script in ComfyUI's Python environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..unet.files import UNetFileError, read_safetensors, unet_part
from ..unet.sd15 import (
    SD15_CHANNEL_MULT,
    SD15_CONTEXT_DIM,
    SD15_HEADS,
    SD15_MODEL_CHANNELS,
    check_sd15,
    describe_unet,
    shape_problems,
)

TEXT_LENGTH = 77  # CLIP's context: SD1.5 is conditioned on 77 token embeddings


def sd15_unet_config(model_channels: int = SD15_MODEL_CHANNELS) -> dict:
    """diffusers UNet2DConditionModel config of SD1.5 (the base width may be changed)."""
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "block_out_channels": tuple(model_channels * m for m in SD15_CHANNEL_MULT),
        "layers_per_block": 2,
        "cross_attention_dim": SD15_CONTEXT_DIM,
        "attention_head_dim": SD15_HEADS,  # diffusers' historical name: SD1.5 has 8 heads
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "center_input_sample": False,
        "use_linear_projection": False,
    }


def sd15_vae_config(channels: int = 128, layers_per_block: int = 2) -> dict:
    """diffusers AutoencoderKL config of SD1.5's VAE (base width and depth may be changed)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": tuple(channels * m for m in (1, 2, 4, 4)),
        "layers_per_block": layers_per_block,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def sd15_text_config(layers: int = 12, intermediate_size: int = 3072) -> CLIPTextConfig:
    """transformers config of SD1.5's text encoder, CLIP ViT-L/14's text tower (768 wide, 12 heads)."""
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=SD15_CONTEXT_DIM,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=12,
        max_position_embeddings=TEXT_LENGTH,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=SD15_CONTEXT_DIM,
    )


def sd15_scheduler() -> DDPMScheduler:
    """SD1.5's training noise schedule: 1000 steps, scaled-linear betas 0.00085..0.012, epsilon target."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )


@dataclass
class SD15Parts:
    """The models of one SD1.5 base: the UNet is trained, the rest is frozen."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDPMScheduler

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """[B] captions -> [B, 77, 768] CLIP last-layer embeddings (SD1.5's conditioning); longer captions
        are cut at 77 tokens."""
        ids = self.tokenizer(
            captions, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
        ).input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]

    def caption_lengths(self, captions: list[str]) -> list[int]:
        """Token count of each caption (start and end tokens included): over 77 means it gets cut."""
        return [len(ids) for ids in self.tokenizer(captions).input_ids]


def load_base(source: Path, tokenizer_dir: Path | None) -> SD15Parts:
    """The SD1.5 parts of a single-file checkpoint or a diffusers folder, read from local files only.
    `tokenizer_dir` holds the CLIP vocabulary (vocab.json, merges.txt); a diffusers folder's own
    tokenizer/ is used when present. Raises UNetFileError / FileNotFoundError with what to do."""
    source = Path(source)
    if source.is_dir():
        return _load_diffusers_folder(source, tokenizer_dir)
    return _load_single_file(source, tokenizer_dir)


TOKENIZER_FILES = ("vocab.json", "tokenizer.json")  # slow (with merges.txt) or fast tokenizer files


def has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(folder: Path | None, base_name: str) -> CLIPTokenizer:
    if not has_tokenizer(folder):
        raise FileNotFoundError(
            f"{base_name} brings no CLIP tokenizer. Its vocabulary ships with ComfyUI (comfy/sd1_tokenizer): "
            "run the command inside ComfyUI's folder tree or pass --comfyui /path/to/ComfyUI, or pass "
            "--tokenizer with a folder holding vocab.json and merges.txt (or tokenizer.json)."
        )
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def _load_single_file(path: Path, tokenizer_dir: Path | None) -> SD15Parts:
    checkpoint, metadata = read_safetensors(path)
    layout = describe_unet(unet_part(checkpoint), path.name)
    check_sd15(layout, metadata, path.name)
    if not any(k.startswith("first_stage_model.") for k in checkpoint):
        raise UNetFileError(
            f"{path.name}: not a full SD1.5 checkpoint (no VAE, first_stage_model.*, and no text encoder). "
            "Give a single-file checkpoint with UNet, CLIP and VAE, or a diffusers folder."
        )

    unet_config = sd15_unet_config(layout.model_channels)
    unet = _filled(
        _empty(UNet2DConditionModel, unet_config),
        convert_ldm_unet_checkpoint(checkpoint, unet_config),
        path,
        "UNet",
    )
    vae_keys = [k for k in checkpoint if k.startswith("first_stage_model.")]
    vae_config = sd15_vae_config(
        channels=checkpoint["first_stage_model.encoder.conv_in.weight"].shape[0],
        layers_per_block=_count(vae_keys, r"first_stage_model\.encoder\.down\.0\.block\.(\d+)\."),
    )
    vae = _filled(
        _empty(AutoencoderKL, vae_config), convert_ldm_vae_checkpoint(checkpoint, vae_config), path, "VAE"
    )
    clip_weights = {
        k.removeprefix("text_model."): v
        for k, v in convert_ldm_clip_checkpoint(checkpoint).items()
        if not k.endswith("position_ids")
    }
    text_config = sd15_text_config(
        layers=_count(clip_weights, r"encoder\.layers\.(\d+)\."),
        intermediate_size=clip_weights["encoder.layers.0.mlp.fc1.weight"].shape[0],
    )
    text_encoder = CLIPTextModel(text_config)
    if any(k.startswith("text_model.") for k in text_encoder.state_dict()):  # transformers < 5.6 nesting
        clip_weights = {"text_model." + k: v for k, v in clip_weights.items()}
    text_encoder = _filled(text_encoder, clip_weights, path, "text encoder")
    return SD15Parts(unet, vae, text_encoder, load_tokenizer(tokenizer_dir, path.name), sd15_scheduler())


def _load_diffusers_folder(folder: Path, tokenizer_dir: Path | None) -> SD15Parts:
    missing = [p for p in ("unet", "vae", "text_encoder") if not (folder / p / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a diffusers SD1.5 folder: {', '.join(missing)}/config.json missing."
        )
    local = {"local_files_only": True, "torch_dtype": torch.float32}
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", low_cpu_mem_usage=False, **local)
    check_sd15(describe_unet(unet.state_dict(), f"{folder.name}/unet"), {}, f"{folder.name}/unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", low_cpu_mem_usage=False, **local)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **local)
    if (folder / "scheduler" / "scheduler_config.json").is_file():
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
        if scheduler.config.prediction_type != "epsilon":
            raise UNetFileError(
                f"{folder.name}: its scheduler says prediction_type={scheduler.config.prediction_type}; "
                "DiffFERV needs an epsilon-prediction SD1.5 model."
            )
    else:
        scheduler = sd15_scheduler()
    own = folder / "tokenizer"
    tokenizer = load_tokenizer(own if has_tokenizer(own) else tokenizer_dir, folder.name)
    return SD15Parts(unet, vae, text_encoder, tokenizer, scheduler)


def _count(keys, pattern: str) -> int:
    """How many distinct indices the regex's group takes over the keys (e.g. layers of a stack)."""
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _empty(model_class, config: dict) -> torch.nn.Module:
    """A diffusers model with its parameters on the meta device (no memory, no random init): every
    parameter gets replaced by `_filled`. (These models hold no buffers outside their state dict.)"""
    with torch.device("meta"):
        return model_class(**config)


def _filled(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: Path, part: str):
    """`model` holding `weights` (as fp32), after checking they cover it exactly (every key, every shape)."""
    problems = shape_problems(weights, model.state_dict(), f"an SD1.5 {part}")
    if problems:
        raise UNetFileError(f"{path.name}: its {part} does not have SD1.5's layout: {'; '.join(problems)}.")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, assign=True)
    return model.eval()
