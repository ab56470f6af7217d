"""What DDIM inversion hands to the editing sampler, and what caching it costs (DiffFERV section 3.4).

Preservation features F_app = SWCFA (Q, K), F_motion = TTA (Q, K) and F_sem = cross-attention maps are
a deterministic function of the inverted latent at a step, the step and the source prompt. So they can
be kept in two ways that give the same frames up to rounding (the store's fp16; see
tests/test_cache_modes_full_size.py for the measured bound):

- "store": recorded during inversion, kept on the CPU in fp16 (the paper's way). Memory grows with
  steps x blocks x tokens; `store_bytes` gives it.
- "recompute": only the inverted latent of every step is kept (`recompute_bytes`); the sampler runs the
  source path (that latent, the source prompt) as an extra chunk in the same batch as the edit and copies
  its features into the edit chunks. Memory no longer grows with blocks; each step's UNet batch is one
  chunk larger (3 chunks instead of 2 with classifier-free guidance: about 1.5x the sampling compute).
  When that batch does not fit the GPU, the source chunk runs alone first into a one-step store
  (``nodes/preservation_glue.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..attention.feature_store import FeatureStore
from ..flow.trajectories import LATENT_FACTORS, level_grid

STORE = "store"
RECOMPUTE = "recompute"
AUTO = "auto"
CACHE_MODES = (AUTO, RECOMPUTE, STORE)
STORE_SHARE_OF_FREE_RAM = 0.4
"""auto picks "store" when its cache needs at most this share of the free system memory."""

# SD1.5's attention blocks per resolution level (1, 1/2, 1/4, 1/8 of the latent): how many, and the
# channel multiplier of the level (320, 640, 1280, 1280 channels at 320 base channels).
SD15_LEVELS = ((5, 1), (5, 2), (5, 4), (1, 4))
VAE_FACTOR = LATENT_FACTORS[0]
"""Pixels per latent cell on each side (the level-0 grid)."""
SD15_HEADS = 8
SD15_CONTEXT_TOKENS = 77


@dataclass
class InversionResult:
    """The INVERSION value: everything the editing sampler needs to reproduce the source path.

    sigmas: the inversion schedule [T + 1], low -> high (the sampler walks it backwards).
    latents: [T + 1, F, 4, h, w] float32 on the CPU, the inverted latent at each of those sigmas, in
        ComfyUI's model space (the input of the model call at that sigma).
    store: the recorded features (store mode) or None (recompute mode).
    source_prompt / source_tokens / source_cond: the prompt text, its CLIP token ids (one 77-token
        chunk) and its CONDITIONING.
    identity: the MODEL the inversion ran on, with its temporal attention (a ComfyUI ModelPatcher; the
        identity model of ``identity.py``): the sampler's recompute mode runs the source path through it.
    trajectories: the TRAJECTORIES the temporal attention ran with.
    """

    sigmas: torch.Tensor
    latents: torch.Tensor
    store: FeatureStore | None
    source_prompt: str
    source_tokens: list[int]
    source_cond: list
    identity: object
    trajectories: object

    @property
    def mode(self) -> str:
        return STORE if self.store is not None else RECOMPUTE

    @property
    def steps(self) -> int:
        return int(self.sigmas.numel()) - 1

    @property
    def frames(self) -> int:
        return int(self.latents.shape[1])

    @property
    def noise(self) -> torch.Tensor:
        """The inverted latent at the top sigma, [F, 4, h, w] (model space)."""
        return self.latents[-1]


def store_bytes(
    frames: int, steps: int, latent_hw: tuple[int, int], base_channels: int = 320, element_size: int = 2
) -> int:
    """Bytes the store mode keeps for a clip (in the UNet's dtype, `element_size` bytes: fp16 2): per frame, per recorded step (T + 1, see
    ``ddim.invert``) and per SD1.5 attention block at level l with N_l tokens and C_l channels:
    2 * N_l * C_l values for (q, k) plus heads * N_l * 77 values for the cross-attention maps.
    `frames`: the frames the UNet evaluates per step; with context windows the sum of the window lengths
    (overlapping windows each keep their own features, ``windows.schedule.frame_evaluations``)."""
    image_size = (latent_hw[0] * VAE_FACTOR, latent_hw[1] * VAE_FACTOR)
    per_step = 0
    for level, (blocks, multiplier) in enumerate(SD15_LEVELS):
        tokens = math.prod(level_grid(image_size, level))
        per_step += blocks * tokens * (2 * base_channels * multiplier + SD15_HEADS * SD15_CONTEXT_TOKENS)
    return element_size * per_step * frames * (steps + 1)


def recompute_bytes(frames: int, steps: int, latent_hw: tuple[int, int]) -> int:
    """Bytes the recompute mode keeps: the float32 latent [4, h, w] per frame and step (T + 1)."""
    h, w = latent_hw
    return 4 * 4 * h * w * frames * (steps + 1)


def appearance_steps(timesteps: torch.Tensor, tau_app: float, total: int = 1000) -> frozenset[int]:
    """Indices of the steps whose timestep t satisfies t > (1 - tau_app) * total: where F_app is injected.

    Args:
        timesteps: the model timestep of each step of the schedule.
        tau_app: share of the timestep range, from the noisy end, whose steps are selected (1: every step,
            0: none).
        total: the model's number of training timesteps (SD1.5: 1000).
    Returns:
        the selected step indices (positions in `timesteps`).
    Shape:
        - timesteps: (S,), S steps of the schedule.
    """
    return frozenset(torch.nonzero(timesteps > (1.0 - tau_app) * total).flatten().tolist())


def store_problem(what: str, store_need: int, free_bytes: int, recompute_need: int) -> str | None:
    """Why the store cache mode, asked for by name, cannot run on a host with `free_bytes` of available
    system memory (None when its cache, `store_need` bytes, fits): the sizes, and the mode that fits (the
    recompute mode keeps `recompute_need` bytes). `what` names the setting (the node input or the flag)."""
    if store_need <= free_bytes:
        return None
    return (
        f"{what} store: its cache of features needs about {store_need / 2**30:.1f} GiB of system memory and "
        f"{free_bytes / 2**30:.1f} GiB is available: use recompute (it keeps "
        f"{recompute_need / 2**20:.0f} MiB of inverted latents and recomputes the features), or auto"
    )


def resolve_cache_mode(mode: str, store_need: int, free_bytes: int, steady_windows: bool = True) -> str:
    """The cache mode a run uses: `mode` unless it is "auto", which picks "store" when its cache
    (`store_need` bytes) fits in STORE_SHARE_OF_FREE_RAM of `free_bytes` and every step evaluates the
    same context windows (`steady_windows`: the store cache is keyed by window), else "recompute"."""
    if mode not in CACHE_MODES:
        raise ValueError(f"cache_mode must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    if mode != AUTO:
        return mode
    return STORE if steady_windows and store_need <= STORE_SHARE_OF_FREE_RAM * free_bytes else RECOMPUTE
