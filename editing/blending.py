"""Edits confined to a region: after every sampling step, the latent outside the mask is put back on the
source path (Blended Latent Diffusion, Avrahami et al. 2023), using the inverted latent of the step the
sampler has just reached.

With deterministic DDIM the inversion's latents are the source path itself, so outside the mask the edit
ends exactly at the source latent, while inside it the sampler works as without a mask (the blend feeds
the next model call, so both sides stay coherent across the feathered edge).
"""

from __future__ import annotations

import torch


class SourceBlend:
    """`blend(step, x)`: x [F, 4, h, w] just moved by sampling step `step` (0-based) -> the blended latent.

    latents: the inversion's latents [T + 1, F, 4, h, w] (model space, low -> high sigma; the sampler
    reaches latents[T - 1 - step] after step `step`). weights: [F, 1, h, w] in 0..1, 1 = edit, 0 = source
    (masks.latent.latent_masks). Memory: the weights on x's device; one step's latents moved per call."""

    def __init__(self, latents: torch.Tensor, weights: torch.Tensor):
        if weights.shape[0] != latents.shape[1] or weights.shape[-2:] != latents.shape[-2:]:
            raise ValueError(
                f"mask: weights {tuple(weights.shape)} do not fit latents of {latents.shape[1]} frames "
                f"{tuple(latents.shape[-2:])}"
            )
        self.latents = latents
        self.weights = weights

    def __call__(self, step: int, x: torch.Tensor) -> torch.Tensor:
        source = self.latents[self.latents.shape[0] - 2 - step].to(x.device, x.dtype)
        weights = self.weights.to(x.device, x.dtype)
        return torch.lerp(source, x, weights)
