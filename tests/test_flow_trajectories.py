"""Trajectory construction: against a naive loop reference, on clips with known motion, occlusion."""

import numpy as np
import pytest
import torch
from comfyui_diffferv.flow.backends import DISFlow, FarnebackFlow
from comfyui_diffferv.flow.trajectories import (
    area_flow,
    build_trajectories,
    check_frames,
    link_trajectories,
    trajectories_from_flows,
)
from flow_clips import shifted_clip, warp_matrices, warped_clip
from trajectory_reference import naive_index, naive_link


def assert_partition(grid) -> None:
    """Every cell of every frame in exactly one trajectory; index and ids agree; runs are contiguous."""
    frames, cells = grid.ids.shape
    tokens = grid.index[grid.index >= 0]
    assert tokens.numel() == frames * cells
    assert torch.equal(tokens.sort().values, torch.arange(frames * cells))
    for t in (0, grid.count // 2, grid.count - 1):
        present = (grid.index[t] >= 0).nonzero().squeeze(1)
        assert torch.equal(present, torch.arange(present[0], present[-1] + 1))
        assert torch.equal(grid.ids.reshape(-1)[grid.index[t, present]], torch.full_like(present, t))
    assert torch.equal(grid.index[grid.index >= 0] // cells, (grid.index >= 0).nonzero()[:, 1])


@pytest.mark.parametrize(
    ("frames", "height", "width", "scale", "seed"), [(6, 5, 7, 1.5, 0), (9, 8, 3, 0.8, 1), (4, 6, 6, 3.0, 2)]
)
def test_matches_naive_reference_on_random_flow(frames, height, width, scale, seed):
    rng = np.random.default_rng(seed)
    flow = rng.normal(0.0, scale, (frames - 1, height, width, 2))
    reliable = rng.random((frames - 1, height, width)) < 0.9
    grid = link_trajectories(torch.from_numpy(flow), torch.from_numpy(reliable))
    expected = naive_link(flow, reliable)
    assert torch.equal(grid.ids, torch.from_numpy(expected))
    assert torch.equal(grid.index, torch.from_numpy(naive_index(expected)))
    assert_partition(grid)


def test_matches_naive_reference_with_exact_ties():
    """Whole-cell flows land exactly on centres, so contested targets are decided by the tie rule."""
    rng = np.random.default_rng(3)
    flow = rng.integers(-1, 2, (7, 4, 9, 2)).astype(np.float64)
    reliable = np.ones((7, 4, 9), dtype=bool)
    grid = link_trajectories(torch.from_numpy(flow), torch.from_numpy(reliable))
    assert torch.equal(grid.ids, torch.from_numpy(naive_link(flow, reliable)))


def row_step(dx: list[float]) -> list[int]:
    """Frame-1 ids after one step on a 1x4 grid whose cells move by ``dx`` cells (frame 0: ids 0..3)."""
    flow = torch.tensor(dx, dtype=torch.float64).reshape(1, 1, 4, 1)
    flow = torch.cat([flow, torch.zeros_like(flow)], dim=-1)
    return link_trajectories(flow, torch.ones(1, 1, 4, dtype=torch.bool)).ids[1].tolist()


def test_contested_cell_rules():
    # landings 1.2, 1.2, 1.0, 8.0: three chains claim cell 1. Chains 0 and 1 have a free second choice
    # (cell 2), chain 2 none (cell 2 is 1.0 away), so chain 2 keeps cell 1; 0 and 1 are equally near
    # cell 2: the lower source, 0, gets it; 1 ends; 3 leaves the frame; cells 0 and 3 start ids 4, 5.
    assert row_step([1.2, 0.2, -1.0, 5.0]) == [4, 2, 0, 5]
    # landings 1.6, 1.9, 3.0, 8.0: chains 0 and 1 claim cell 2 and both could yield to cell 1: the
    # nearer landing (chain 1) keeps cell 2 and chain 0 takes cell 1.
    assert row_step([1.6, 0.9, 1.0, 5.0]) == [4, 0, 1, 2]
    # landings 0.7, 1.4, 2.0, 3.0: chain 0 crossed into cell 1 early; chain 1 (no free second choice:
    # cell 2 is claimed) keeps cell 1 although it lands farther away, and chain 0 steps back to cell 0:
    # nothing breaks. Nearest-wins alone would end chain 1 here.
    assert row_step([0.7, 0.4, 0.0, 0.0]) == [0, 1, 2, 3]


def test_sub_cell_motion_adds_up():
    """A quarter cell a frame moves the chain one cell once it has added up to more than half a cell;
    FLATTEN-style per-frame rounding of 0.25 would never move it."""
    flow = torch.zeros(6, 1, 4, 2, dtype=torch.float64)
    flow[..., 0] = 0.25
    grid = link_trajectories(flow, torch.ones(6, 1, 4, dtype=torch.bool))
    # x = 0, .25, .5 (a tie: the lower cell), .75, 1, 1.25, 1.5 (a tie)
    assert (grid.index[0] % 4).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_area_flow_is_the_block_mean():
    rng = np.random.default_rng(4)
    forward = rng.normal(0, 4, (2, 16, 24, 2)).astype(np.float32)
    reliable = rng.random((2, 16, 24)) < 0.5
    flow, ok = area_flow(torch.from_numpy(forward), torch.from_numpy(reliable), 8)
    assert flow.shape == (2, 2, 3, 2) and ok.shape == (2, 2, 3)
    for n in range(2):
        for r in range(2):
            for c in range(3):
                block = forward[n, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8]
                np.testing.assert_allclose(flow[n, r, c].numpy(), block.reshape(-1, 2).mean(0) / 8, atol=1e-6)
                assert bool(ok[n, r, c]) == (reliable[n, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8].mean() >= 0.5)


def assert_follows(errors: torch.Tensor, factor: int, where) -> None:
    """Chains follow the true motion: 99.5 % of cells within one cell of it (step 4 of the rule may put
    a chain one cell off), 90 % within half a cell (the rounding bound), allowing 2 px of flow error."""
    slack = 2.0 / factor
    assert (errors <= 1.0 + slack).double().mean() >= 0.995, (where, errors.max())
    assert (errors <= 0.5 + slack).double().mean() >= 0.9, (where, errors.median())


def chain_errors(grid, factor: int, map_points) -> torch.Tensor:
    """For every trajectory cell (all frames), the Chebyshev distance in cells from the cell to the point
    the true motion carries the trajectory's starting cell centre to. ``map_points(points [K, 2] pixels,
    f0 [K], f) -> [K, 2]`` pixels."""
    frames, cells = grid.ids.shape
    present = grid.index >= 0
    start = present.to(torch.int8).argmax(dim=1)
    first_cell = grid.index[torch.arange(grid.count), start] % cells
    first_xy = torch.stack([first_cell % grid.width, first_cell // grid.width], -1).double()
    errors = []
    for f in range(1, frames):
        on = present[:, f] & (start < f)
        cell = grid.index[on, f] % cells
        cell_xy = torch.stack([cell % grid.width, cell // grid.width], -1).double()
        true_px = map_points((first_xy[on] + 0.5) * factor - 0.5, start[on], f)
        errors.append(((true_px + 0.5) / factor - 0.5 - cell_xy).abs().amax(-1))
    return torch.cat(errors)


@pytest.mark.parametrize("backend", [DISFlow(), FarnebackFlow()], ids=["dis", "farneback"])
def test_shifted_portrait_trajectories_follow_the_motion(backend):
    step = (8, 4)  # content moves 8 px right, 4 px down a frame; 128 x 192 frames (H != W)
    clip = shifted_clip(8, (128, 192), step, (60, 60))
    trajectories = build_trajectories(clip, backend, threshold=1.0)
    assert set(trajectories.grids) == {(16, 24), (8, 12), (4, 6), (2, 3)}
    motion = torch.tensor(step, dtype=torch.float64)
    for (h, w), grid in trajectories.grids.items():
        factor = 128 // h
        assert grid.ids.shape == (8, h * w)
        assert_partition(grid)
        errors = chain_errors(grid, factor, lambda p, f0, f: p + (f - f0).unsqueeze(1) * motion)
        assert_follows(errors, factor, (h, w))
    # at 1/8 the content moves 7 cells right and 3.5 down over the clip: 17 x 12.5 cells stay in view
    # all along; at 4 px a frame (half a cell) flow noise decides many border crossings, so expect most
    assert trajectories.grid(16, 24).full_span_share >= 0.7 * (17 * 12.5) / (16 * 24)


def test_rotating_zooming_portrait_trajectories_follow_the_motion():
    size = (128, 192)
    mats = warp_matrices(8, degrees=2.0, zoom=1.02, size=size)
    clip = warped_clip(mats, size)
    trajectories = build_trajectories(clip, DISFlow(), threshold=1.0)

    def map_points(points, f0, f):
        out = torch.empty_like(points)
        for start in f0.unique().tolist():
            sel = f0 == start
            m = torch.from_numpy(mats[f] @ np.linalg.inv(mats[start]))
            out[sel] = points[sel] @ m[:2, :2].T + m[:2, 2]
        return out

    for (h, _w), grid in trajectories.grids.items():
        factor = 128 // h
        assert_partition(grid)
        errors = chain_errors(grid, factor, map_points)
        assert_follows(errors, factor, h)
    assert trajectories.grid(16, 24).full_span_share >= 0.5


def moving_square_flows(frames, size, square, step):
    """Exact flows for a square of ``square`` px (top-left at (0, 48)) moving ``step`` px right a frame
    over a static background. Returns the (forward, backward) pairs and the square's mask per frame."""
    h, w = size
    masks = torch.zeros(frames, h, w, dtype=torch.bool)
    for f in range(frames):
        masks[f, 48 : 48 + square, step * f : step * f + square] = True
    pairs = []
    for f in range(frames - 1):
        forward = torch.zeros(h, w, 2)
        backward = torch.zeros(h, w, 2)
        forward[masks[f], 0] = step
        backward[masks[f + 1], 0] = -step
        pairs.append((forward, backward))
    return pairs, masks


def test_occluding_square_ends_covered_chains_and_starts_revealed_ones():
    frames, size, square, step = 6, (128, 128), 32, 16
    pairs, masks = moving_square_flows(frames, size, square, step)
    trajectories = trajectories_from_flows(pairs, size, threshold=1.0, factors=(8, 16))
    for factor in (8, 16):
        grid = trajectories.grid(128 // factor, 128 // factor)
        assert_partition(grid)
        on_square = masks[:, ::factor, ::factor].reshape(frames, -1)  # cell covered by the square
        shift = step // factor
        for f in range(frames - 1):
            now, nxt = grid.ids[f], grid.ids[f + 1]
            square_cells = on_square[f].nonzero().squeeze(1)
            assert torch.equal(nxt[square_cells + shift], now[square_cells])  # square tracked
            still = ~on_square[f] & ~on_square[f + 1]
            assert torch.equal(nxt[still], now[still])  # untouched background continues
            covered = ~on_square[f] & on_square[f + 1]
            assert covered.any() and not torch.isin(now[covered], nxt).any()  # covered: chain ends
            revealed = on_square[f] & ~on_square[f + 1]
            assert revealed.any() and not torch.isin(nxt[revealed], now).any()  # revealed: new chain
        assert grid.full_span_share < 1.0


def test_occluding_square_with_dis_flow():
    """The same scene rendered (a textured square over the portrait, 8 px a frame) and tracked with DIS."""
    frames, size, square, step = 6, (128, 128), 32, 8
    _, masks = moving_square_flows(frames, size, square, step)
    background = shifted_clip(1, size, (0, 0), (64, 64))[0]
    texture = shifted_clip(1, (square, square), (0, 0), (100, 150))[0]
    clip = background.repeat(frames, 1, 1, 1)
    for f in range(frames):
        clip[f, 48 : 48 + square, step * f : step * f + square] = texture
    grid = build_trajectories(clip, DISFlow(), threshold=1.0, factors=(8, 64)).grid(16, 16)
    assert_partition(grid)
    on_square = masks[:, ::8, ::8].reshape(frames, 16, 16)
    inner = torch.zeros_like(on_square)
    inner[:, 1:-1, 1:-1] = on_square[:, :-2, :-2] & on_square[:, 2:, 2:]  # square cells away from its edge
    far = torch.ones(16, 16, dtype=torch.bool)
    far[5:11, :] = False  # rows the square passes through (6..9), with one row of margin
    far, on_square, inner = far.reshape(-1), on_square.reshape(frames, -1), inner.reshape(frames, -1)
    for f in range(frames - 1):
        now, nxt = grid.ids[f], grid.ids[f + 1]
        assert torch.equal(nxt[far], now[far])
        inner_cells = inner[f].nonzero().squeeze(1)
        assert torch.equal(nxt[inner_cells + 1], now[inner_cells])
        covered = ~on_square[f] & on_square[f + 1]
        assert not torch.isin(now[covered], nxt).any()


def test_check_frames_refuses_bad_input():
    with pytest.raises(ValueError, match="at least 2 frames"):
        check_frames(torch.zeros(1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"frame 1 is 128x64 but frame 0 is 64x64.*one size"):
        check_frames([np.zeros((64, 64, 3), np.float32), np.zeros((64, 128, 3), np.float32)])
    with pytest.raises(ValueError, match=r"100x64.*multiples of 64.*Load Video \(DiffFERV\)"):
        check_frames(torch.zeros(3, 64, 100, 3))
    with pytest.raises(ValueError, match="2 channels; expected 1"):
        check_frames(torch.zeros(3, 64, 64, 2))
    with pytest.raises(ValueError, match=r"shape \[\(64, 64\)\]; expected \[height, width, channels\]"):
        check_frames([np.zeros((64, 64))] * 2)
    video = check_frames([np.full((64, 128, 1), 255, np.uint8)] * 2)
    assert video.shape == (2, 64, 128, 3) and video.dtype == torch.float32 and bool((video == 1.0).all())
