"""Per-frame image quality of an edit against its source: MSE, PSNR and SSIM.

Frames are float [F, H, W, C] in 0..1 (ComfyUI's IMAGE layout), the data range is 1.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

PSNR_CAP_DB = 100.0
"""PSNR of identical frames (the MSE is floored at 1e-10, so the value stays finite and JSON-safe)."""
SSIM_SIGMA, SSIM_RADIUS = 1.5, 5
"""Gaussian window of SSIM (Wang et al. 2004): sigma 1.5, 11 x 11 taps."""
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


def mse(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Mean squared error per frame, float64 [F]: OpenCV's squared L2 norm of the difference (accumulated
    in float64), a frame at a time, no temporary arrays."""
    reference, test = _numpy(reference), _numpy(test)
    size = reference[0].size
    return torch.tensor([cv2.norm(a, b, cv2.NORM_L2SQR) / size for a, b in zip(reference, test, strict=True)])


def _numpy(frames: torch.Tensor) -> np.ndarray:
    """float32 numpy view of CPU float32 frames (a copy otherwise)."""
    return np.ascontiguousarray(frames.detach().to("cpu", torch.float32).numpy())


def psnr_of(mse_values: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of MSE values: 10 log10(1 / MSE), at most PSNR_CAP_DB."""
    return -10.0 * torch.log10(mse_values.clamp_min(10.0 ** (-PSNR_CAP_DB / 10.0)))


def psnr(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame in dB, float64 [F]."""
    return psnr_of(mse(reference, test))


def _gaussian_taps() -> np.ndarray:
    taps = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    window = np.exp(-(taps**2) / (2 * SSIM_SIGMA**2))
    return (window / window.sum()).astype(np.float32)


def ssim(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Structural similarity per frame, float64 [F] (1 = identical).

    Wang et al. 2004 with a Gaussian window (sigma 1.5, 11 x 11), C1 = 0.01^2, C2 = 0.03^2, population
    statistics; the SSIM map is computed per channel over the window positions that lie inside the frame
    and averaged over positions and channels (as scikit-image's ``structural_similarity`` with
    ``gaussian_weights=True, use_sample_covariance=False, data_range=1``). Frames need sides of at least
    11 px. Loops over frames (five separable OpenCV filters each, all channels at once: on a CPU several
    times faster than torch's convolution of single-channel planes); memory: a few float32 frames.
    """
    frames, height, width, _ = reference.shape
    if min(height, width) < 2 * SSIM_RADIUS + 1:
        raise ValueError(
            f"ssim needs frames of at least {2 * SSIM_RADIUS + 1} px a side, got {width}x{height}"
        )
    taps, r = _gaussian_taps(), SSIM_RADIUS
    reference, test = _numpy(reference), _numpy(test)

    def blur(plane: np.ndarray) -> np.ndarray:  # the window positions inside the frame only
        return cv2.sepFilter2D(plane, cv2.CV_32F, taps, taps)[r : height - r, r : width - r]

    out = np.empty(frames)
    for index, (x, y) in enumerate(zip(reference, test, strict=True)):
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x * mu_x
        var_y = blur(y * y) - mu_y * mu_y
        cov = blur(x * y) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
            (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)
        )
        out[index] = ssim_map.mean(dtype=np.float64)
    return torch.from_numpy(out)
