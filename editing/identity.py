"""The identity model (IP-FaceDiff's eps_i): the UNet whose appearance and motion features the sampler
injects, when it is not the UNet that samples the edit (eps_e).

DDIM Invert With Cache runs on the identity model: the inverted latents and, in store mode, the
preservation features (self-attention q/k, cross-attention maps) come from it. The sampler may sample
with any SD1.5 UNet whose attention layout is the same (`layout_problem`): the same transformer blocks,
heads and q/k widths, so that each block's features fit the other model's block. How the source features
reach the edit (`source_path`):

- the same UNet weights (the usual case): in recompute mode the source chunk runs in the edit model's
  batch, one UNet call per step (`IN_BATCH`);
- another UNet (its own weights in memory): in recompute mode the identity UNet runs the source chunk in
  its own call first, recording its features for this step, then the edit model's batch injects them:
  two UNet calls per step (`SEPARATE`), one chunk in the first, the edit's chunks in the second (the
  sampler's own UNet runs its source chunk this way too when the chunks do not fit one call);
- the same UNet module with other weight patches (e.g. a LoRA on one of them): ComfyUI holds one set of
  patched weights per module at a time, so recompute mode cannot run both in one step and is refused;
  store mode runs them one after the other and works (`FROM_STORE`, as for every store-mode edit).

Pure python; no ComfyUI import (the ComfyUI glue measures the layouts and weights).
"""

from __future__ import annotations

from collections.abc import Mapping

IN_BATCH = "in_batch"
SEPARATE = "separate"
FROM_STORE = "store"

AttentionLayout = Mapping[tuple, tuple[int, ...]]
"""Transformer block key -> (self-attention heads, q width, k width, cross-attention heads, q width,
context width) of a UNet (``nodes/attention_patches.attention_layout``)."""
LAYOUT_FIELDS = (
    "self-attention heads",
    "self-attention q width",
    "self-attention k width",
    "cross-attention heads",
    "cross-attention q width",
    "context width",
)

SAMPLER_MODEL = "model (the sampler's, the edit model)"
INVERSION_MODEL = "the inversion's model (DDIM Invert With Cache's, the identity model)"
WHAT_TO_DO = (
    "connect SD1.5 UNets of the same architecture (fine-tunes or LoRAs of one base), or run DDIM Invert "
    "With Cache on the sampler's model"
)


def layout_problem(edit: AttentionLayout, identity: AttentionLayout) -> str | None:
    """Why the identity model's features cannot be injected into the edit model, or None when every
    transformer block of both has the same attention layout."""
    missing = sorted(set(identity) ^ set(edit), key=str)
    if missing:
        where = "the sampler's" if missing[0] in identity else "the inversion's"
        return (
            f"{SAMPLER_MODEL} and {INVERSION_MODEL} have different transformer blocks (block {missing[0]} "
            f"is missing in {where}): the identity features cannot be injected; {WHAT_TO_DO}"
        )
    for block in sorted(edit, key=str):
        for field, have, want in zip(LAYOUT_FIELDS, edit[block], identity[block], strict=True):
            if have != want:
                return (
                    f"{SAMPLER_MODEL} and {INVERSION_MODEL} have different UNet layouts: block {block} has "
                    f"{field} {have} in the sampler's model and {want} in the inversion's; the identity "
                    f"features cannot be injected; {WHAT_TO_DO}"
                )
    return None


def source_path(same_module: bool, same_weights: bool, store_mode: bool) -> str:
    """How the source features reach the edit (see the module docstring) for an identity model that
    shares the edit model's UNet module (`same_module`) with or without the same weight patches."""
    if store_mode:
        return FROM_STORE
    if same_module and same_weights:
        return IN_BATCH
    if same_module:
        raise ValueError(
            f"{SAMPLER_MODEL} runs the UNet of {INVERSION_MODEL} with other weight patches (a LoRA or merge "
            "on one of them): in cache_mode recompute both would have to be in memory at once, and ComfyUI "
            "holds one set of weights per UNet. Run the inversion with cache_mode store, or load the "
            "identity UNet as its own model (a second loader)"
        )
    return SEPARATE
