"""DDIMInvertWithCache: deterministic DDIM inversion of a clip with temporal attention, keeping what the
editing sampler needs to preserve identity, motion and background (DiffFERV section 3.4)."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..attention.control import SigmaClock
from ..editing.ddim import invert
from ..editing.inputs import CACHE_MODE, SOURCE_PROMPT, STEPS, check_clip_frames
from ..editing.preservation import STORE_SHARE_OF_FREE_RAM, InversionResult
from .common import CATEGORY, PREFIX, Inversion, Trajectories, input_problem, progress
from .preservation_glue import (
    encode_prompt,
    pick_cache_mode,
    recording_model,
    run_sampler,
    schedule,
    temporal_model,
)
from .prompts import check_prompt
from .window_glue import prepare_windows


class DDIMInvertWithCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "DDIMInvertWithCache",
            display_name="DDIM Invert With Cache (DiffFERV)",
            category=CATEGORY,
            description=(
                "Inverts the clip's latents to noise with deterministic DDIM, the frames processed jointly "
                "(sliding-window and trajectory attention), and keeps the preservation features (appearance, "
                "motion, semantic layout) for the editing sampler."
            ),
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="SD1.5 model, ideally through Apply Temporal Attention (DiffFERV); without it the "
                    "default temporal attention (window 3, every resolution) is applied here. Give the sampler "
                    "the same model, or another SD1.5 UNet of the same layout to sample the edit with: this "
                    "one then gives the appearance and motion features (the identity model).",
                ),
                io.Clip.Input("clip", tooltip="The CLIP of the checkpoint, to encode the source prompt."),
                io.Latent.Input("latent", tooltip="The clip's frames encoded with VAE Encode, in order."),
                io.String.Input(
                    "source_prompt",
                    multiline=True,
                    default=SOURCE_PROMPT,
                    tooltip="What the video shows, in the words the edit will change (e.g. 'a photo of a "
                    "woman' for the edit 'a photo of an old woman'). Under 75 tokens.",
                ),
                Trajectories.Input(
                    "trajectories", tooltip="Compute Flow Trajectories of the same frames, at the same size."
                ),
                io.Int.Input(
                    "steps",
                    **STEPS.widget(),
                    tooltip=STEPS.tooltip(
                        "DDIM steps. The sampler uses the same schedule. Time grows linearly; the store cache too."
                    ),
                ),
                io.Combo.Input(
                    "cache_mode",
                    **CACHE_MODE.widget(),
                    tooltip="How the preservation features reach the sampler; both give the same frames up to "
                    "rounding (at most 1/255 per pixel value). "
                    "store: recorded now, kept in system RAM as fp16 (about 4 GB per 512x512 frame at 50 "
                    "steps), sampling runs 2 chunks per step. recompute: only the inverted latents are kept "
                    "(about 3 MB per frame), sampling runs the source path as a 3rd chunk (about 1.5x the "
                    "sampling time). auto: store when it fits in "
                    f"{STORE_SHARE_OF_FREE_RAM:.0%} of free RAM, else recompute. Under "
                    "context windows each window keeps its own features (store needs windows that stay the "
                    "same at every step).",
                ),
            ],
            outputs=[
                Inversion.Output(
                    "inversion", display_name="inversion", tooltip="For PreservationInjectSampler (DiffFERV)."
                ),
                io.Latent.Output(
                    "noise",
                    display_name="noise",
                    tooltip="The inverted noise. A core sampler at DDIM without added noise rebuilds "
                    "the clip from it (a plain DDIM reconstruction).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, source_prompt, cache_mode):
        return input_problem(cls, cache_mode=cache_mode) or check_prompt("source_prompt", source_prompt)

    @classmethod
    def execute(cls, model, clip, latent, source_prompt, trajectories, steps, cache_mode) -> io.NodeOutput:
        samples = latent["samples"]
        check_clip_frames(samples, trajectories)
        model = prepare_windows(temporal_model(model, trajectories))
        cond, tokens = encode_prompt(clip, source_prompt, "source_prompt")
        sigmas = schedule(model, steps)
        frames, _, h, w = samples.shape
        mode, sizes = pick_cache_mode(model, cache_mode, frames, steps, (h, w))
        logging.info("DiffFERV inversion: %d frames, %d steps, cache %s (%s)", frames, steps, mode, sizes)
        clock = SigmaClock()
        run_model, store = recording_model(model, sigmas, mode, clock)
        kept: list[torch.Tensor] = []
        options = {
            "keep": kept,
            "final_call": store is not None,
            "on_step": progress(None),
            "before_call": clock.tell,
        }
        noise = run_sampler(run_model, invert, options, 1.0, sigmas, cond, cond, samples, steps)
        result = InversionResult(
            sigmas=sigmas,
            latents=torch.stack(kept),
            store=store,
            source_prompt=source_prompt,
            source_tokens=tokens,
            source_cond=cond,
            identity=model,
            trajectories=trajectories,
        )
        return io.NodeOutput(result, {"samples": noise})
