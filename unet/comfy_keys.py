"""ComfyUI's names for the weights of an SD1.5 UNet: its unet_config and the diffusers -> ComfyUI key map.

Imports no ComfyUI module: ComfyUI's converter is passed in by the caller (unet/comfy_model.py, the
`specialize` command's ComfyUI export).
"""

from __future__ import annotations

from .files import UNetFileError
from .sd15 import SD15_CHANNEL_MULT, SD15_CONTEXT_DIM, SD15_HEADS, SD15_MODEL_CHANNELS


def comfy_key_map(keys, model_channels: int, unet_to_diffusers, name: str) -> dict[str, str]:
    """{diffusers key: ComfyUI key} for the diffusers-layout SD1.5 UNet weights named by `keys`, from
    ComfyUI's converter `unet_to_diffusers` (comfy.utils, passed in: this module does not import ComfyUI).
    Raises UNetFileError when a key has no place in an SD1.5 UNet."""
    key_map = unet_to_diffusers(comfy_sd15_unet_config(model_channels))
    unknown = sorted(set(keys) - set(key_map))
    if unknown:
        raise UNetFileError(
            f"{name}: {len(unknown)} diffusers weights have no place in an SD1.5 UNet "
            f"(e.g. {', '.join(unknown[:3])}); this is not an SD1.5-layout UNet."
        )
    return {k: key_map[k] for k in keys}


def comfy_sd15_unet_config(model_channels: int = SD15_MODEL_CHANNELS) -> dict:
    """ComfyUI's unet_config of an SD1.5 UNet (as its model detection gives it) at a given base width;
    `comfy.utils.unet_to_diffusers` turns it into the diffusers -> ComfyUI key map."""
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": 4,
        "model_channels": model_channels,
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": list(SD15_CHANNEL_MULT),
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": SD15_CONTEXT_DIM,
        "num_heads": SD15_HEADS,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }
