"""PreservationInjectSampler: deterministic DDIM from the inverted noise with the edit prompt, the source
path's preservation features injected (DiffFERV section 3.4)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..attention.control import SigmaClock
from ..editing.blending import SourceBlend
from ..editing.ddim import sample, sampling_sigmas
from ..editing.inputs import EDIT_PROMPT, GUIDANCE, TAU_APP
from ..editing.preservation import InversionResult
from ..masks.inputs import FEATHER_PX
from ..masks.latent import check_masks, latent_masks
from .common import CATEGORY, PREFIX, Inversion, progress
from .preservation_glue import (
    encode_prompt,
    injecting_model,
    run_sampler,
    sampling_plan,
    temporal_model,
)
from .prompts import check_prompt
from .window_glue import prepare_windows


def source_blend(inversion: InversionResult, mask: torch.Tensor, feather_px: int) -> SourceBlend:
    """The sampler's after-step blend that keeps the clip outside `mask` [M, H, W] on the source path."""
    frames, _, height, width = inversion.latents.shape[1:]
    check_masks(mask, frames, (height * 8, width * 8))
    return SourceBlend(inversion.latents, latent_masks(mask.cpu(), frames, (height, width), feather_px))


class PreservationInjectSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "PreservationInjectSampler",
            display_name="Preservation Inject Sampler (DiffFERV)",
            category=CATEGORY,
            description=(
                "Samples the edited clip from the inverted noise with deterministic DDIM and the edit prompt, "
                "injecting the inversion's appearance features early (identity, background), its motion "
                "features throughout, and its cross-attention maps for the words both prompts share."
            ),
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The model that samples the edit: the one that ran DDIM Invert With Cache, or "
                    "another SD1.5 UNet of the same layout (e.g. a LoRA'd or face-specialized one; IP-FaceDiff's "
                    "identity model). The appearance and motion features always come from the inversion's "
                    "model; with another UNet, cache_mode recompute runs two UNet calls per step.",
                ),
                io.Clip.Input("clip", tooltip="The CLIP of the checkpoint, to encode the edit prompt."),
                Inversion.Input("inversion", tooltip="From DDIM Invert With Cache (DiffFERV)."),
                io.String.Input(
                    "edit_prompt",
                    multiline=True,
                    default=EDIT_PROMPT,
                    tooltip="The source prompt with the change, e.g. 'a photo of a woman' -> 'a photo of an "
                    "old woman with glasses'. Words shared with the source prompt keep the source's layout; "
                    "new words act freely. Under 75 tokens.",
                ),
                io.String.Input(
                    "negative_prompt",
                    multiline=True,
                    default="",
                    tooltip="Empty: the source prompt (the paper's choice: guidance then pushes away from the "
                    "unedited video). Or any text.",
                ),
                io.Float.Input(
                    "guidance",
                    **GUIDANCE.widget(),
                    tooltip=GUIDANCE.tooltip(
                        "Classifier-free guidance scale. Higher: stronger edit, less faithful."
                    ),
                ),
                io.Float.Input(
                    "tau_app",
                    **TAU_APP.widget(),
                    tooltip=TAU_APP.tooltip(
                        "Share of the sampling (from the noisy end) during which the appearance features are "
                        "injected: higher keeps identity and details closer to the input, lower lets the edit "
                        "change more; 0 turns appearance injection off."
                    ),
                ),
                io.Boolean.Input(
                    "inject_motion",
                    default=True,
                    tooltip="Inject the trajectory-attention features at every step (keeps the input's motion).",
                ),
                io.Boolean.Input(
                    "inject_semantic",
                    default=True,
                    tooltip="Replace the cross-attention maps of words shared by both prompts with the "
                    "source's (keeps the semantic layout).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Where the edit may change the clip (1) and where the clip stays as it is (0): one "
                    "mask for the whole clip or one per frame, at the frames' size (Face Mask (DiffFERV), "
                    "the mask editor, a segmentation node). Outside it, each step's latent is put back on the "
                    "source path, so the output there is the input. Empty: the whole frame is edited.",
                ),
                io.Int.Input(
                    "mask_feather_px",
                    **FEATHER_PX.widget(),
                    optional=True,
                    tooltip="Soften the mask's edge over about this many pixels on each side, so the edit "
                    "fades into the untouched area (the latent works in 8x8-pixel cells: below 8 the edge "
                    "follows the cells).",
                ),
            ],
            outputs=[
                io.Latent.Output(
                    "latent",
                    display_name="latent",
                    tooltip="The edited clip's latents; decode with VAE Decode.",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, edit_prompt, negative_prompt=None):
        problem = check_prompt("edit_prompt", edit_prompt)
        return (
            check_prompt("negative_prompt", negative_prompt, allow_empty=True) if problem is True else problem
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        inversion: InversionResult,
        edit_prompt,
        negative_prompt,
        guidance,
        tau_app,
        inject_motion,
        inject_semantic,
        mask=None,
        mask_feather_px=FEATHER_PX.default,
    ) -> io.NodeOutput:
        model = prepare_windows(temporal_model(model, inversion.trajectories))
        edit_cond, edit_tokens = encode_prompt(clip, edit_prompt, "edit_prompt")
        if negative_prompt.strip():
            negative_cond, negative_tokens = encode_prompt(clip, negative_prompt, "negative_prompt")
        else:
            negative_cond, negative_tokens = inversion.source_cond, inversion.source_tokens
        plan = sampling_plan(
            model, inversion, tau_app, inject_motion, inject_semantic, edit_tokens, negative_tokens
        )
        clock = SigmaClock()
        run_model = injecting_model(model, inversion, plan, clock)
        steps = inversion.steps
        options = {"on_step": progress(None), "before_call": clock.tell}
        if mask is not None:
            options["after_step"] = source_blend(inversion, mask, mask_feather_px)
        start = model.model.process_latent_out(inversion.noise)
        sigmas = sampling_sigmas(inversion.sigmas)
        edited = run_sampler(
            run_model, sample, options, guidance, sigmas, edit_cond, negative_cond, start, steps
        )
        return io.NodeOutput({"samples": edited})
