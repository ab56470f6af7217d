"""The ComfyUI side of LoadSpecializedUNet: SD1.5 UNet weights -> MODEL, on their own or onto a MODEL.

Everything model-specific is ComfyUI's own: the diffusers -> ComfyUI key map (`comfy.utils.unet_to_diffusers`),
the SD1.5 model config and UNet class, the dtype choice of its UNet loader, and the weight-patch system
(`ModelPatcher.add_patches`, the mechanism ModelMergeSimple uses), so LoRA loaders compose with the result.
"""

from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import torch

from .comfy_keys import comfy_key_map, comfy_sd15_unet_config
from .files import UNetFileError, check_finite, read_safetensors, unet_part
from .sd15 import check_sd15, describe_unet, shape_problems

UNET_PREFIX = "diffusion_model."  # where a ComfyUI BaseModel keeps its UNet


def read_sd15_unet(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The SD1.5 UNet weights of a safetensors file (UNet-only or full checkpoint, ComfyUI/ldm or
    diffusers key layout) in ComfyUI's key layout, and its base channel count. Raises UNetFileError for
    pickles, truncated files, non-SD1.5 models and NaN weights. Memory: one copy of the weights."""
    tensors, metadata = read_safetensors(path)
    state_dict = unet_part(tensors)
    layout = describe_unet(state_dict, path.name)
    check_sd15(layout, metadata, path.name)
    if layout.key_layout == "diffusers":
        key_map = comfy_key_map(state_dict, layout.model_channels, comfy.utils.unet_to_diffusers, path.name)
        state_dict = {key_map[k]: v for k, v in state_dict.items()}
    check_finite(state_dict, path.name)
    return state_dict, layout.model_channels


def build_sd15_model(state_dict: dict[str, torch.Tensor], model_channels: int, name: str):
    """A ModelPatcher holding ComfyUI's SD1.5 model with these weights (the steps of ComfyUI's UNet loader,
    with the SD1.5 config chosen by layout rather than by size). Consumes `state_dict`."""
    config = comfy.supported_models.SD15(comfy_sd15_unet_config(model_channels))
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    dtype = mm.unet_dtype(
        model_params=comfy.utils.calculate_parameters(state_dict),
        supported_dtypes=config.supported_inference_dtypes,
        weight_dtype=comfy.utils.weight_dtype(state_dict),
    )
    config.set_inference_dtype(
        dtype, mm.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes)
    )
    model = config.get_model(state_dict)
    problems = shape_problems(state_dict, model.diffusion_model.state_dict(), "an SD1.5 UNet")
    if problems:
        raise UNetFileError(f"{name}: not an SD1.5-layout UNet: {'; '.join(problems)}.")
    model = model.to(offload_device)
    model.load_model_weights(state_dict, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def apply_sd15_unet(model, state_dict: dict[str, torch.Tensor], name: str):
    """A clone of `model` whose UNet weights are replaced by `state_dict` through weight patches
    (strength 1 on the patch, 0 on the original weight: ModelMergeSimple at ratio 0). The input MODEL is
    untouched; patches added later (LoRAs) apply on top. Memory: the patch tensors, kept on the CPU."""
    config = model.model.model_config
    if not isinstance(config, comfy.supported_models.SD15) or config.unet_config.get("in_channels") != 4:
        raise UNetFileError(
            f"The MODEL input is a {type(config).__name__} model, not SD1.5: connect the MODEL output of an "
            f"SD1.5 checkpoint loader, or leave the input unconnected to load {name} on its own."
        )
    problems = shape_problems(state_dict, model.model.diffusion_model.state_dict(), "the MODEL input's UNet")
    if problems:
        raise UNetFileError(
            f"{name} does not fit the MODEL input: {'; '.join(problems)}. Both must be the same SD1.5 size."
        )
    patched = model.clone()
    added = patched.add_patches({UNET_PREFIX + k: (v,) for k, v in state_dict.items()}, 1.0, 0.0)
    if len(added) != len(state_dict):
        raise UNetFileError(f"{name}: only {len(added)} of {len(state_dict)} weights could be applied.")
    return patched
