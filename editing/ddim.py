"""Deterministic DDIM in ComfyUI's sigma parametrisation, forwards (sampling) and backwards (inversion).

ComfyUI runs eps-prediction models on x = x0 + sigma * eps (variance exploding form; the model wrapper
divides by sqrt(1 + sigma^2) itself) and its model call returns the denoised x0. One DDIM step (eta 0)
from sigma to sigma_next is then

    x_next = x0 + sigma_next * (x - x0) / sigma

which is exact for both directions. Sampling walks sigmas from high to low; inversion walks the same
schedule from low to high, starting at a small positive sigma instead of 0 (as ComfyUI's FlipSigmas
does), so that its evaluation at step i sees the latent at the sigma the sampler evaluates at step
T - i.
"""

from __future__ import annotations

import torch

INVERSION_START_SIGMA = 1e-4
"""Where inversion starts instead of sigma 0 (the eps of a clean latent is undefined at 0)."""


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """Move x from `sigma` to `sigma_next` along the model's eps estimate (x - denoised) / sigma."""
    return denoised + (x - denoised) * (sigma_next / sigma)


def inversion_sigmas(sampling_sigmas: torch.Tensor) -> torch.Tensor:
    """The inversion schedule of a sampling schedule [T + 1] (high -> 0): reversed, with its first entry
    (0) replaced by INVERSION_START_SIGMA. Returns [T + 1], low -> high."""
    flipped = sampling_sigmas.flip(0).clone()
    if flipped[0] == 0:
        flipped[0] = INVERSION_START_SIGMA
    return flipped
