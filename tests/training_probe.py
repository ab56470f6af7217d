"""Whether an image-space training objective of `specialize` (IP-FaceDiff's identity loss, the directional
CLIP loss) moves the UNet where it is meant to, measured on a tiny SD1.5 with random weights.

What is measured, per seed: the gradients that one micro-batch of DRAWS samples gives the UNet through
the trainer's own `micro_batch_loss` (each sample a fresh timestep and noise), split into the branch's
image-space term and its epsilon term; the gradient of a held-out measure (the identity distance, or the
CLIP-direction score, of the one-step predictions at DRAWS other noise draws and timesteps); and that
measure after a step of equal length STEP along each term's gradient. The image-space term works when
its step improves the held-out measure and the epsilon term's step does not (or much less), on every seed.

What is deterministic: every draw is seeded (torch's global RNG for the trainer's draws, a generator for
the held-out ones), torch runs on one thread, and deterministic algorithms are asked for where torch
has them; the numbers still differ between machines and library versions in the last digits (CPU
kernels), far below the margins the tests assert.

The setting, and why: a random VAE decodes no face, so the identity network's embedding of a decoded
prediction is meaningless and its gradient points nowhere in particular (measured: cosine with the
held-out gradient 0.00 +/- 0.02 over 8 seeds, against 0.16 with a VAE that reproduces the face). The
VAE is therefore first trained to reproduce the face crop (`reconstructing_vae`), as SD1.5's does; the
UNet stays random. One micro-batch of 32 draws (about half of them under the image-loss timestep cap)
averages the per-draw noise of the gradient enough for its direction to show.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

DRAWS = 32
"""Samples in the micro-batch that gives the training gradients, and held-out draws of the measure."""
STEP = 1e-2
"""Length (L2 norm over all UNet parameters) of the step taken along each term's gradient."""
HELD_OUT_TIMESTEPS = (25, 475)
"""Range of the held-out draws' timesteps: under the image-loss cap (500), where the term acts."""


def reconstructing_vae(vae, image: torch.Tensor, steps: int = 150, seed: int = 0) -> float:
    """Train `vae` (in place) to reproduce `image` [1, 3, S, S] in [-1, 1] through its posterior mean (L1,
    Adam), with the posterior narrowed to SD1.5's (a random encoder's standard deviation is about 1,
    three times its mean: the latents would be mostly noise); returns the final mean absolute error.
    Frozen afterwards."""
    torch.manual_seed(seed)
    with torch.no_grad():  # log-variance channels of the encoder's output: std e^-6
        vae.quant_conv.weight[4:] = 0.0
        vae.quant_conv.bias[4:] = -12.0
    vae.train().requires_grad_(True)
    optimizer = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(steps):
        error = (vae.decode(vae.encode(image).latent_dist.mean).sample - image).abs().mean()
        optimizer.zero_grad()
        error.backward()
        optimizer.step()
    vae.eval().requires_grad_(False)
    return error.item()


def one_step_predictions(parts, images: torch.Tensor, context: torch.Tensor, generator: torch.Generator):
    """The decoded one-step predictions [N, 3, S, S] of `images` [N, 3, S, S] noised at N timesteps spread
    over HELD_OUT_TIMESTEPS with noise from `generator`, the UNet conditioned on `context` [N, 77, 768]:
    differentiable in the UNet's parameters."""
    from comfyui_diffferv.specialize.objectives import decode, predicted_x0

    with torch.no_grad():
        latents = parts.vae.encode(images).latent_dist.mean * parts.vae.config.scaling_factor
    timesteps = torch.linspace(*HELD_OUT_TIMESTEPS, len(images)).round().long()
    noise = torch.randn(latents.shape, generator=generator)
    noisy = parts.scheduler.add_noise(latents, noise, timesteps)
    eps = parts.unet(noisy, timesteps, encoder_hidden_states=context).sample
    return decode(parts.vae, predicted_x0(parts.scheduler.alphas_cumprod, noisy, eps, timesteps))


@dataclass(frozen=True)
class ProbeRow:
    """One seed: the cosine of each term's gradient with the held-out measure's (positive: its step lowers
    the measure), and the measure's change after a step of length STEP along each."""

    seed: int
    cos_term: float
    cos_epsilon: float
    change_term: float
    change_epsilon: float


def probe(
    parts, batch, objective, settings, measure: Callable[[torch.Generator], torch.Tensor], seed: int
) -> ProbeRow:
    """One seed of the probe (module docstring). `batch`: the micro-batch as the trainer's loader gives it;
    `objective`: the branch's image-space objective; `measure(generator)`: the held-out measure (lower is
    better), a scalar differentiable in the UNet's parameters, drawing its noise from `generator`."""
    from comfyui_diffferv.specialize.data import face_augmentation
    from comfyui_diffferv.specialize.train import micro_batch_loss

    params = [p for p in parts.unet.parameters() if p.requires_grad]

    def gradient(value: torch.Tensor, retain: bool = False) -> torch.Tensor:
        grads = torch.autograd.grad(value, params, retain_graph=retain, allow_unused=True)
        return torch.cat(
            [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params, strict=True)]
        )

    def held_out() -> torch.Tensor:
        return measure(torch.Generator().manual_seed(10_000 + seed))

    torch.manual_seed(seed)
    no_augmentation = face_augmentation(0.0, (1.0, 1.0), 0.0)
    loss, term = micro_batch_loss(
        parts, batch, no_augmentation, torch.device("cpu"), torch.float32, nullcontext(), settings, objective
    )
    term_gradient = gradient(term, retain=True)
    epsilon_gradient = gradient(loss - term)
    measured = held_out()
    measure_gradient = gradient(measured)
    before = measured.item()
    start = torch.nn.utils.parameters_to_vector(params).detach()
    changes = []
    for direction in (term_gradient, epsilon_gradient):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(start - STEP * direction / direction.norm(), params)
            changes.append(float(held_out()) - before)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(start, params)
    cosines = [
        float(torch.nn.functional.cosine_similarity(g, measure_gradient, dim=0))
        for g in (term_gradient, epsilon_gradient)
    ]
    return ProbeRow(seed, *cosines, *changes)


def table(name: str, rows: list[ProbeRow]) -> str:
    """The probe's rows as a table, with the mean and standard deviation of the paired differences."""
    import statistics

    lines = [f"{name}: seed | cos(term, held-out) cos(epsilon, held-out) | change after a step: term epsilon"]
    lines += [
        f"  {r.seed} | {r.cos_term:+.4f} {r.cos_epsilon:+.4f} | {r.change_term:+.6f} {r.change_epsilon:+.6f}"
        for r in rows
    ]
    for what, values in (
        ("cos(term) - cos(epsilon)", [r.cos_term - r.cos_epsilon for r in rows]),
        ("change(epsilon) - change(term)", [r.change_epsilon - r.change_term for r in rows]),
    ):
        mean, spread = statistics.mean(values), statistics.stdev(values)
        lines.append(
            f"  {what}: mean {mean:+.6f}, standard deviation {spread:.6f}, "
            f"mean / standard error {mean / (spread / len(values) ** 0.5):.1f}"
        )
    return "\n".join(lines)
