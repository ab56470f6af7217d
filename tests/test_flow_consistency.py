"""Forward-backward consistency check against a per-pixel loop, and on an occlusion."""

import math

import numpy as np
import pytest
import torch
from comfyui_diffferv.flow.consistency import consistent_pixels


def naive_round_trip(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixel by pixel: the round-trip error |forward(x) + backward(x + forward(x))| (bilinear backward,
    border clamped), or inf where x + forward(x) leaves the frame. [N, H, W]."""
    n, h, w, _ = forward.shape
    out = np.full((n, h, w), np.inf)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                lx, ly = x + forward[i, y, x, 0], y + forward[i, y, x, 1]
                if not (-0.5 <= lx < w - 0.5 and -0.5 <= ly < h - 0.5):
                    continue
                cx, cy = min(max(lx, 0.0), w - 1.0), min(max(ly, 0.0), h - 1.0)
                x0, y0 = min(math.floor(cx), w - 2), min(math.floor(cy), h - 2)
                ax, ay = cx - x0, cy - y0
                back = (
                    (1 - ax) * (1 - ay) * backward[i, y0, x0]
                    + ax * (1 - ay) * backward[i, y0, x0 + 1]
                    + (1 - ax) * ay * backward[i, y0 + 1, x0]
                    + ax * ay * backward[i, y0 + 1, x0 + 1]
                )
                out[i, y, x] = np.hypot(*(forward[i, y, x] + back))
    return out


@pytest.mark.parametrize("threshold", [2.0, 4.0, 0.0])
def test_matches_per_pixel_loop(threshold):
    rng = np.random.default_rng(5)
    forward = rng.normal(0, 2.0, (2, 12, 17, 2))
    backward = -forward + rng.normal(0, 0.6, forward.shape)  # unsmooth: the round trip often fails
    got = consistent_pixels(torch.from_numpy(forward), torch.from_numpy(backward), threshold).numpy()
    error = naive_round_trip(forward, backward)
    expected = np.isfinite(error) & ((error <= threshold) | (threshold <= 0))
    # OpenCV interpolates in 1/32 px steps: only errors within a hair of the threshold may differ
    differ = got != expected
    assert (np.abs(error[differ] - threshold) < 0.05).all()
    assert differ.mean() < 0.01
    assert 0.05 < expected.mean() < 0.95  # both outcomes occur


def test_marks_covered_pixels_and_frame_exits():
    h, w = 16, 24
    forward = torch.zeros(1, h, w, 2)
    backward = torch.zeros(1, h, w, 2)
    forward[0, 4:8, 4:8, 0] = 4.0  # a 4x4 block moves 4 px right
    backward[0, 4:8, 8:12, 0] = -4.0
    forward[0, 12:, 20:, 0] = 6.0  # this corner leaves the frame
    ok = consistent_pixels(forward, backward, 1.0)[0]
    assert ok[4:8, 4:8].all()  # the block itself: round trip closes
    assert not ok[4:8, 8:12].any()  # background it covers: 0 + (-4) fails
    assert not ok[12:, 20:].any()
    assert ok.sum() == h * w - 16 - 16
