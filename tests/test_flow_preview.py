"""Preview renderer: colours per trajectory (checked against colorsys), brightness by length, layout."""

import colorsys

import pytest
import torch
from comfyui_diffferv.flow.preview import render_trajectories, trajectory_colours
from comfyui_diffferv.flow.trajectories import link_trajectories

GOLDEN = (5**0.5 - 1) / 2


def test_colours_match_colorsys():
    ids = torch.tensor([0, 1, 2, 7, 1000, 123457])
    value = torch.tensor([1.0, 0.5, 0.3, 0.9, 1.0, 0.4])
    got = trajectory_colours(ids, value)
    for i, v, rgb in zip(ids.tolist(), value.tolist(), got, strict=True):
        expected = colorsys.hsv_to_rgb((i * GOLDEN) % 1.0, 0.75, v)
        torch.testing.assert_close(rgb, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)
    assert (got[:3, None] - got[None, :3]).abs().sum(-1).add(torch.eye(3)).min() > 0.3  # neighbours differ


def test_render_paints_cells_by_trajectory_and_darkens_short_ones():
    # 2x3 grid, 4 frames: the top row moves right one cell a frame (its right end leaves, left starts new)
    flow = torch.zeros(3, 2, 3, 2, dtype=torch.float64)
    flow[:, 0, :, 0] = 1.0
    grid = link_trajectories(flow, torch.ones(3, 2, 3, dtype=torch.bool))
    frames = torch.zeros(4, 16, 24, 3)
    out = render_trajectories(grid, frames, opacity=1.0)
    assert out.shape == (4, 16, 24, 3)
    lengths = grid.lengths
    for f in range(4):
        for cell in range(6):
            row, col = divmod(cell, 3)
            block = out[f, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8].reshape(-1, 3)
            t = int(grid.ids[f, cell])
            value = 0.3 + 0.7 * int(lengths[t]) / 4
            expected = torch.tensor(colorsys.hsv_to_rgb((t * GOLDEN) % 1.0, 0.75, value))
            torch.testing.assert_close(block, expected.float().expand(64, 3), atol=1e-5, rtol=0)
    # the bottom row spans all frames: full brightness; the top row's chains are shorter: darker
    assert out[:, 8:].amax() == pytest.approx(1.0) and out[:, :8].amax(-1).amax() < 1.0
    mixed = render_trajectories(grid, torch.ones(4, 16, 24, 3), opacity=0.5)
    torch.testing.assert_close(mixed, 0.5 * out + 0.5)


def test_render_refuses_other_frames():
    grid = link_trajectories(torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="render the frames the trajectories were computed from"):
        render_trajectories(grid, torch.zeros(3, 16, 16, 3))
