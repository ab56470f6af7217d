"""Deterministic DDIM in ComfyUI's sigma parametrisation, forwards (sampling) and backwards (inversion).

ComfyUI runs eps-prediction models on x = x0 + sigma * eps (variance exploding form; the model wrapper
divides by sqrt(1 + sigma^2) itself) and its model call returns the denoised x0. One DDIM step (eta 0)
from sigma to sigma_next is then

    x_next = x0 + sigma_next * (x - x0) / sigma

which is exact for both directions. Sampling walks sigmas from high to low; inversion walks the same
schedule from low to high, starting at a small positive sigma instead of 0 (as ComfyUI's FlipSigmas
does), so that its evaluation at step i sees the latent at the sigma the sampler evaluates at step
T - i.

The two loops below are ComfyUI sampler functions (``fn(model, x, sigmas, extra_args, callback,
disable)``, wrapped by ``comfy.samplers.KSAMPLER``): `model(x, sigma * s_in, **extra_args)` is ComfyUI's
CFG-combined denoiser. They hold no ComfyUI import.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

INVERSION_START_SIGMA = 1e-4
"""Where inversion starts instead of sigma 0 (the eps of a clean latent is undefined at 0)."""

StepHook = Callable[[int], None]
"""Called with the number of steps done (progress bar, interruption)."""
StepBlend = Callable[[int, torch.Tensor], torch.Tensor]
"""(step index, latent after that step) -> the latent the next step starts from."""
SigmaHook = Callable[[float], None]
"""Told the sigma (a host float) of the model calls about to run, before them (``SigmaClock.tell``)."""


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """Move x from `sigma` to `sigma_next` along the model's eps estimate (x - denoised) / sigma.

    One deterministic DDIM step (eta 0), the same formula in both directions (see the module docstring).

    Args:
        x: the latent at `sigma`, in ComfyUI's model space.
        denoised: the model's denoised estimate x0 of `x` at `sigma`.
        sigma: the sigma x is at; must not be 0 (it divides).
        sigma_next: the sigma to move to (0 returns `denoised`).
    Returns:
        the latent at `sigma_next`, in the dtype and on the device of x and denoised.
    Shape:
        - x: (F, 4, h, w), F frames (the batch), h x w latent grid; any shape works if the two match.
        - denoised: (F, 4, h, w)
        - Returns: (F, 4, h, w)
    """
    return denoised + (x - denoised) * (sigma_next / sigma)


def inversion_sigmas(sampling_sigmas: torch.Tensor) -> torch.Tensor:
    """The inversion schedule of a sampling schedule: reversed, with its first entry (0) replaced by
    INVERSION_START_SIGMA.

    A first entry that is not 0 is kept as it is. The input is not changed (the result is a copy).

    Args:
        sampling_sigmas: a sampling schedule, high -> 0 (ComfyUI's SIGMAS).
    Returns:
        the inversion schedule, low -> high, in the input's dtype and on its device.
    Shape:
        - sampling_sigmas: (T + 1,), T steps.
        - Returns: (T + 1,)
    """
    flipped = sampling_sigmas.flip(0).clone()
    if flipped[0] == 0:
        flipped[0] = INVERSION_START_SIGMA
    return flipped


def sampling_sigmas(inversion_schedule: torch.Tensor) -> torch.Tensor:
    """The sampling schedule of an inversion schedule: reversed, ending at 0.

    The last entry is set to 0 whatever it was (DDIM's last step then returns the denoised latent). The
    input is not changed (the result is a copy).

    Args:
        inversion_schedule: an inversion schedule, low -> high (``inversion_sigmas``).
    Returns:
        the sampling schedule, high -> 0, in the input's dtype and on its device.
    Shape:
        - inversion_schedule: (T + 1,), T steps.
        - Returns: (T + 1,)
    """
    sigmas = inversion_schedule.flip(0).clone()
    sigmas[-1] = 0.0
    return sigmas


def invert(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict,
    callback=None,
    disable=None,
    *,
    keep: list[torch.Tensor],
    final_call: bool,
    on_step: StepHook | None = None,
    before_call: SigmaHook | None = None,
) -> torch.Tensor:
    """DDIM inversion of x (at sigmas[0], low) up the schedule `sigmas` (low -> high).

    A ComfyUI sampler function (see the module docstring). Appends to `keep` the latent at every sigma of
    the schedule, T + 1 tensors like x, moved to the CPU in float32 (the recompute cache mode runs the
    source path on them). With `final_call`, the model is evaluated once more at the top sigma, result
    unused, so that features recorded by attention patches cover every sigma the sampler will evaluate.
    Memory: the T + 1 kept latents on the CPU.

    Args:
        model: ComfyUI's CFG-combined denoiser, ``model(x, sigma * s_in, **extra_args)`` -> denoised x0.
        x: the latent to invert, at sigmas[0], in ComfyUI's model space, on the model's device.
        sigmas: the inversion schedule, low -> high (``inversion_sigmas``).
        extra_args: keyword arguments passed on to every model call, as ComfyUI's KSAMPLER gives them.
        callback: ComfyUI's per-step callback (previews), called with a dict of x, i, sigma, sigma_hat and
            denoised; None for none.
        disable: ComfyUI's switch for its progress bar; unused here.
        keep: list the latent at every sigma is appended to (float32, CPU).
        final_call: evaluate the model once more at sigmas[-1].
        on_step: the progress/interrupt hook, called with the number of steps done; None for none.
        before_call: told each sigma before the model calls at it; None for none.
    Returns:
        the latent at sigmas[-1], like x.
    Shape:
        - x: (F, 4, h, w), F frames (the batch), h x w latent grid.
        - sigmas: (T + 1,), T steps.
        - keep: T + 1 tensors (F, 4, h, w) appended.
        - Returns: (F, 4, h, w)
    """
    x = _walk(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        on_step,
        before_call,
        visit=lambda x: keep.append(x.detach().float().cpu()),
    )
    keep.append(x.detach().float().cpu())
    if final_call:
        if before_call is not None:
            before_call(float(sigmas[-1]))
        model(x, sigmas[-1] * x.new_ones(x.shape[0]), **extra_args)
    return x


def sample(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict,
    callback=None,
    disable=None,
    *,
    on_step: StepHook | None = None,
    after_step: StepBlend | None = None,
    before_call: SigmaHook | None = None,
) -> torch.Tensor:
    """Deterministic DDIM sampling of x (at sigmas[0], high) down the schedule `sigmas` (high -> 0).

    A ComfyUI sampler function (see the module docstring). The last step, to sigma 0, returns the model's
    denoised latent.

    Args:
        model: ComfyUI's CFG-combined denoiser, ``model(x, sigma * s_in, **extra_args)`` -> denoised x0.
        x: the starting latent at sigmas[0] (e.g. the inversion's top latent), in ComfyUI's model space.
        sigmas: the sampling schedule, high -> 0 (``sampling_sigmas``).
        extra_args: keyword arguments passed on to every model call, as ComfyUI's KSAMPLER gives them.
        callback: ComfyUI's per-step callback (previews), called with a dict of x, i, sigma, sigma_hat and
            denoised; None for none.
        disable: ComfyUI's switch for its progress bar; unused here.
        on_step: the progress/interrupt hook, called with the number of steps done; None for none.
        after_step: ``after_step(i, x)`` -> the latent step i + 1 starts from, called after each step i
            (``blending.SourceBlend``: keep the source outside a mask); None for none.
        before_call: told each sigma before the model calls at it; None for none.
    Returns:
        the sampled latent at sigma 0, like x.
    Shape:
        - x: (F, 4, h, w), F frames (the batch), h x w latent grid.
        - sigmas: (T + 1,), T steps.
        - Returns: (F, 4, h, w)
    """
    return _walk(model, x, sigmas, extra_args, callback, on_step, before_call, after=after_step)


def _walk(
    model, x, sigmas, extra_args, callback, on_step, before_call, visit=None, after=None
) -> torch.Tensor:
    """DDIM steps along `sigmas` in either direction; `visit(x)` sees the latent before each step,
    `after(i, x)` may replace it after step i. The schedule is read to the host once."""
    s_in = x.new_ones(x.shape[0])
    host = sigmas.tolist()
    for i in range(len(sigmas) - 1):
        if visit is not None:
            visit(x)
        if before_call is not None:
            before_call(host[i])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        x = ddim_step(x, denoised, host[i], host[i + 1])
        if after is not None:
            x = after(i, x)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if on_step is not None:
            on_step(i + 1)
    return x
