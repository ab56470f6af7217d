"""Forward-backward consistency check against a per-pixel loop, and on an occlusion."""

import math

import numpy as np
import pytest
import torch
from comfyui_diffferv.flow.consistency import consistent_pixels


def naive_consistent(forward: np.ndarray, backward: np.ndarray, threshold: float) -> np.ndarray:
    """Pixel by pixel: lands inside the frame and the round trip (bilinear backward, border clamped)
    closes within ``threshold``."""
    n, h, w, _ = forward.shape
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                lx, ly = x + forward[i, y, x, 0], y + forward[i, y, x, 1]
                if not (-0.5 <= lx < w - 0.5 and -0.5 <= ly < h - 0.5):
                    continue
                if threshold <= 0:
                    out[i, y, x] = True
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
                out[i, y, x] = np.hypot(*(forward[i, y, x] + back)) <= threshold
    return out


@pytest.mark.parametrize("threshold", [2.0, 4.0, 0.0])
def test_matches_per_pixel_loop(threshold):
    rng = np.random.default_rng(5)
    forward = rng.normal(0, 2.0, (2, 12, 17, 2))
    backward = -forward + rng.normal(0, 0.6, forward.shape)  # unsmooth: the round trip often fails
    got = consistent_pixels(torch.from_numpy(forward), torch.from_numpy(backward), threshold)
    expected = naive_consistent(forward, backward, threshold)
    np.testing.assert_array_equal(got.numpy(), expected)
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
