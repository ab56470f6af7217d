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
    """Puts the latent outside a mask back on the source path after every sampling step.

    Used as the sampler's `after_step` (``ddim.sample``); see ``__call__`` for the blend itself.

    Args:
        latents: the inversion's latents (``ddim.invert``'s `keep`), in ComfyUI's model space, low -> high
            sigma; any device and dtype (one step's latent is moved to the sampler's per call).
        weights: the blend weights in 0..1, 1 = edit, 0 = source (``masks.latent.latent_masks``).
    Shape:
        - latents: (T + 1, F, 4, h, w), T sampling steps, F frames, h x w latent grid.
        - weights: (F, 1, h, w)
    """

    def __init__(self, latents: torch.Tensor, weights: torch.Tensor):
        if weights.shape[0] != latents.shape[1] or weights.shape[-2:] != latents.shape[-2:]:
            raise ValueError(
                f"mask: weights {tuple(weights.shape)} do not fit latents of {latents.shape[1]} frames "
                f"{tuple(latents.shape[-2:])}"
            )
        self.latents = latents
        self.weights = weights

    def __call__(self, step: int, x: torch.Tensor) -> torch.Tensor:
        """Blend the latent the sampler has just moved with the source latent of the same sigma.

        After sampling step `step` of T the sampler has reached the sigma of ``latents[T - 1 - step]``; the
        result is that source latent where the weights are 0, `x` where they are 1, linear in between
        (``torch.lerp``). Memory: the weights and one step's latent are copied to x's device and dtype on
        every call.

        Args:
            step: the sampling step just done, 0-based (0..T - 1).
            x: the latent after that step, in model space, on the sampler's device and dtype.
        Returns:
            the latent the next step starts from, on x's device and in x's dtype.
        Shape:
            - x: (F, 4, h, w), F frames, h x w latent grid.
            - Returns: (F, 4, h, w)
        """
        source = self.latents[self.latents.shape[0] - 2 - step].to(x.device, x.dtype)
        weights = self.weights.to(x.device, x.dtype)
        return torch.lerp(source, x, weights)
