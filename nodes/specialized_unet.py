"""LoadSpecializedUNet: the face-specialized SD1.5 UNet (DiffFERV section 3.2) as a MODEL.

Two ways to use it: on its own (MODEL out; take CLIP and VAE from any SD1.5 checkpoint), or with the MODEL
of a stock SD1.5 checkpoint loader connected, whose UNet weights it replaces on a clone through ComfyUI's
weight patches (CLIP and VAE then come from that loader, LoRA loaders placed after it still apply).
"""

from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..unet.comfy_model import apply_sd15_unet, build_sd15_model, read_sd15_unet
from ..unet.files import UNetFileError, read_header
from ..unet.provenance import training_summary
from ..unet.sd15 import check_sd15_file
from .common import CATEGORY, PREFIX

CHECKPOINTS_LABEL = "checkpoints/"  # list entry prefix of files from the checkpoints folder


def unet_files() -> list[str]:
    """Files of ComfyUI's diffusion_models (and legacy unet) folders, then those of the checkpoints
    folder under a 'checkpoints/' label. Pickle formats are listed too, so choosing one explains why it
    is refused rather than hiding it."""
    names = folder_paths.get_filename_list("diffusion_models")
    return names + [CHECKPOINTS_LABEL + n for n in folder_paths.get_filename_list("checkpoints")]


def resolve(name: str) -> Path:
    path = folder_paths.get_full_path("diffusion_models", name)
    if path is None and name.startswith(CHECKPOINTS_LABEL):
        path = folder_paths.get_full_path("checkpoints", name[len(CHECKPOINTS_LABEL) :])
    if path is None:
        raise UNetFileError(
            f"{name}: not found in ComfyUI's diffusion_models, unet or checkpoints folders. Put the file "
            "there (or in a folder listed in extra_model_paths.yaml) and refresh."
        )
    return Path(path)


class LoadSpecializedUNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "LoadSpecializedUNet",
            display_name="Load Specialized UNet (DiffFERV)",
            category=CATEGORY,
            description=(
                "Loads an SD1.5-layout UNet (e.g. the face-specialized one the pack's `specialize` command "
                "trains) from a .safetensors file in ComfyUI/diffusers key layout. Alone it outputs the "
                "UNet as a MODEL; with a MODEL connected it puts these weights onto a copy of that model. "
                "After it runs, the node shows what trained the file (the command's branch: specialization, "
                "IP-FaceDiff's identity UNet for the inversion or its edit UNet for the sampler; losses; steps)."
            ),
            inputs=[
                io.Combo.Input(
                    "unet_name",
                    options=unet_files(),
                    tooltip="A .safetensors UNet (or full SD1.5 checkpoint, listed under checkpoints/) from "
                    "ComfyUI's models/diffusion_models, models/unet or models/checkpoints folders, in "
                    "ComfyUI/original-SD or diffusers key layout. Pickle files (.ckpt, .pt, .bin) are "
                    "refused: convert them to .safetensors.",
                ),
                io.Model.Input(
                    "model",
                    optional=True,
                    tooltip="Optional: the MODEL of a stock SD1.5 checkpoint loader. Its UNet weights are "
                    "replaced by this file's on a copy (the input stays as it is); use that loader's CLIP "
                    "and VAE. Place LoRA loaders after this node. Leave unconnected to load the UNet alone.",
                ),
            ],
            outputs=[io.Model.Output("specialized_model", display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, unet_name):
        """Before anything runs, from the file's header alone: a pickle, a cut-short or corrupt file, or
        another model family is refused here (the weights are read when the node runs)."""
        if unet_name is None:
            return True
        try:
            check_sd15_file(resolve(unet_name), name=unet_name)
        except UNetFileError as error:
            return f"unet_name: {error}"
        return True

    @classmethod
    def fingerprint_inputs(cls, unet_name, **kwargs):
        """Run again when the file changes (a training run rewrote it), not only when another is chosen."""
        try:
            return resolve(unet_name).stat().st_mtime_ns
        except (UNetFileError, OSError):
            return unet_name

    @classmethod
    def execute(cls, unet_name, model=None) -> io.NodeOutput:
        path = resolve(unet_name)
        summary = training_summary(read_header(path)[1]) or "not written by the specialize command"
        shown = {"text": (f"{path.name}\n{summary}",)}
        state_dict, model_channels = read_sd15_unet(path)
        if model is None:
            return io.NodeOutput(build_sd15_model(state_dict, model_channels, path.name), ui=shown)
        return io.NodeOutput(apply_sd15_unet(model, state_dict, path.name), ui=shown)
