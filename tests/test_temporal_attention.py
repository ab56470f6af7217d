"""SWCFA and TTA against loop references (fp32, tight tolerance), on small tensors."""

import copy

import pytest
import torch
from comfyui_diffferv.attention.patches import TemporalSelfAttention
from comfyui_diffferv.attention.swcfa import sliding_window_attention, window_groups
from comfyui_diffferv.attention.tta import TrajectoryGroups, trajectory_attention
from comfyui_diffferv.flow.trajectory_set import TrajectoryGrid, TrajectorySet
from naive_attention import attend, random_trajectories, single_frame_trajectories
from naive_attention import swcfa as naive_swcfa
from naive_attention import tta as naive_tta

HEADS, INNER = 2, 8
TOL = {"atol": 1e-5, "rtol": 1e-5}


def qkv(chunks: int, frames: int, tokens: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(chunks * frames, tokens, INNER, generator=generator) for _ in range(3)]


def extra_options(chunks: int, height: int, width: int, **more) -> dict:
    return {
        "cond_or_uncond": [1, 0][:chunks] if chunks <= 2 else list(range(chunks)),
        "n_heads": HEADS,
        "activations_shape": [chunks, 4, height, width],
        "block": ("input", 1),
        "block_index": 0,
        **more,
    }


@pytest.mark.parametrize("window", [1, 3, 5, 7])
@pytest.mark.parametrize("frames", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_swcfa_matches_the_paper_formula(window, frames, chunks):
    q, k, v = qkv(chunks, frames, tokens=6, seed=window * 100 + frames * 10 + chunks)
    got = sliding_window_attention(q, k, v, chunks, window, HEADS)
    torch.testing.assert_close(got, naive_swcfa(q, k, v, chunks, window, HEADS), **TOL)


def test_swcfa_window_is_clipped_not_shifted():
    groups = dict((len(keys[0]), dict(zip(rows, keys, strict=True))) for rows, keys in window_groups(6, 5))
    assert groups[3][0] == (0, 1, 2)  # frame 1 of 6 (1-based): frames 1..3
    assert groups[4][1] == (0, 1, 2, 3)
    assert groups[5][2] == (0, 1, 2, 3, 4)
    assert groups[3][5] == (3, 4, 5)
    with pytest.raises(ValueError, match="odd"):
        window_groups(6, 4)


def test_swcfa_never_crosses_chunks():
    q, k, v = qkv(2, 4, tokens=5)
    before = sliding_window_attention(q, k, v, 2, 3, HEADS)
    k2, v2 = k.clone(), v.clone()
    k2[4:] += 3.0
    v2[4:] -= 2.0
    after = sliding_window_attention(q, k2, v2, 2, 3, HEADS)
    assert torch.equal(after[:4], before[:4])
    assert not torch.allclose(after[4:], before[4:])


@pytest.mark.parametrize("frames", [1, 3, 6])
@pytest.mark.parametrize("chunks", [1, 2, 3])
@pytest.mark.parametrize("max_bytes", [1, 800, 1 << 27])
def test_tta_matches_token_by_token_reference(frames, chunks, max_bytes):
    grid = random_trajectories(frames, 3, 5, keep=0.6, seed=frames + chunks)
    q, k, v = qkv(chunks, frames, tokens=15, seed=frames * 7 + chunks)
    groups = TrajectoryGroups.from_grid(grid)
    got = trajectory_attention(q, k, v, groups, chunks, HEADS, max_bytes=max_bytes)
    torch.testing.assert_close(got, naive_tta(q, k, v, grid, chunks, HEADS), **TOL)


def test_tta_groups_are_dense_blocks_of_equal_length():
    grid = random_trajectories(6, 4, 3, keep=0.5, seed=3)
    groups = TrajectoryGroups.from_grid(grid)
    lengths = [b.shape[1] for b in groups.buckets]
    assert lengths == sorted(set(lengths)) and len(lengths) > 1  # uneven trajectories, one block per length
    tokens = torch.cat([b.reshape(-1) for b in groups.buckets])
    assert torch.equal(tokens.sort().values, torch.arange(6 * 12))
    for bucket in groups.buckets:  # each row: one token per frame, consecutive frames
        frame_steps = (bucket // 12).diff(dim=1)
        assert torch.equal(frame_steps, torch.ones_like(frame_steps))


def test_tta_of_single_frame_trajectories_is_the_identity():
    grid = single_frame_trajectories(4, 2, 3)
    q, k, v = qkv(2, 4, tokens=6)
    assert torch.equal(trajectory_attention(q, k, v, TrajectoryGroups.from_grid(grid), 2, HEADS), v)


def test_tta_never_crosses_chunks():
    grid = random_trajectories(4, 2, 3, keep=0.8, seed=1)
    groups = TrajectoryGroups.from_grid(grid)
    q, k, v = qkv(2, 4, tokens=6)
    before = trajectory_attention(q, k, v, groups, 2, HEADS)
    v2 = v.clone()
    v2[4:] += 1.0
    assert torch.equal(trajectory_attention(q, k, v2, groups, 2, HEADS)[:4], before[:4])


def test_trajectory_groups_reject_broken_trajectories_and_accept_gaps():
    ids = torch.tensor([[0, 1], [1, 0], [0, 2]])  # trajectory 1 spans frames 0-1, trajectory 2 only frame 2
    TrajectoryGroups.from_grid(TrajectoryGrid.from_ids(ids, 1, 2))
    gap = TrajectoryGrid.from_ids(torch.tensor([[0, 1], [2, 3], [0, 4]]), 1, 2)  # trajectory 0 skips frame 1
    buckets = [b.tolist() for b in TrajectoryGroups.from_grid(gap).buckets]  # as a looped window may see it
    assert buckets == [[[1], [2], [3], [5]], [[0, 4]]]
    good = TrajectoryGrid.from_ids(ids, 1, 2)
    twice = TrajectoryGrid(1, 2, good.ids, torch.cat([good.index, good.index[:1]]))
    with pytest.raises(ValueError, match="exactly one trajectory"):
        TrajectoryGroups.from_grid(twice)
    shifted = TrajectoryGrid(1, 2, good.ids, good.index.roll(1, dims=1))
    with pytest.raises(ValueError, match="not a token of frame"):
        TrajectoryGroups.from_grid(shifted)


def trajectory_set(grid: TrajectoryGrid) -> TrajectorySet:
    return TrajectorySet(grid.frames, (grid.height * 8, grid.width * 8), {(grid.height, grid.width): grid})


@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize("chunks", [1, 2])
def test_patch_runs_swcfa_then_tta_on_its_output(window, chunks):
    grid = random_trajectories(5, 2, 4, keep=0.7, seed=window)
    patch = TemporalSelfAttention(window=window, trajectories=trajectory_set(grid))
    q, k, v = qkv(chunks, 5, tokens=8, seed=chunks)
    got = patch(q, k, v, extra_options(chunks, 2, 4))
    want = naive_tta(q, k, naive_swcfa(q, k, v, chunks, window, HEADS), grid, chunks, HEADS)
    torch.testing.assert_close(got, want, **TOL)


def test_patch_reduces_to_self_attention_for_window_1_and_single_frame_trajectories():
    grid = single_frame_trajectories(3, 2, 3)
    patch = TemporalSelfAttention(window=1, trajectories=trajectory_set(grid))
    q, k, v = qkv(2, 3, tokens=6)
    got = patch(q, k, v, extra_options(2, 2, 3))
    plain = torch.stack([attend(q[i], k[i], v[i], HEADS) for i in range(6)])
    torch.testing.assert_close(got, plain, **TOL)


def test_patch_reads_a_non_square_grid_and_checks_frames():
    grid = random_trajectories(3, 2, 5, keep=0.7, seed=0)
    patch = TemporalSelfAttention(trajectories=trajectory_set(grid))
    q, k, v = qkv(1, 3, tokens=10)
    patch(q, k, v, extra_options(1, 2, 5))
    with pytest.raises(KeyError, match="5x2 latent grid"):
        patch(q, k, v, extra_options(1, 5, 2))
    q4, k4, v4 = qkv(1, 4, tokens=10)
    with pytest.raises(ValueError, match="TRAJECTORIES hold 3 frames"):
        patch(q4, k4, v4, extra_options(1, 2, 5))


def test_patch_survives_deepcopy_as_itself():
    patch = TemporalSelfAttention(trajectories=trajectory_set(single_frame_trajectories(2, 1, 1)))
    assert copy.deepcopy({"p": patch})["p"] is patch


def test_the_trajectory_group_cache_keeps_what_a_run_needs():
    """A step over more windows than the default cache holds rebuilds each window's groups every time (the
    least recently used is dropped first); sized for the run's windows (`keep_groups`), a second step finds
    every one built."""
    from comfyui_diffferv.attention.patches import GROUPS_KEPT

    frames, cells = 80, 4
    grid = random_trajectories(frames, cells, cells, keep=0.9, seed=3)
    patch = TemporalSelfAttention(trajectories=TrajectorySet(frames, (32, 32), {(cells, cells): grid}))
    windows = [(start, start + 1) for start in range(0, frames - 1, 1)][: GROUPS_KEPT + 6]

    def step() -> list[TrajectoryGroups]:
        return [patch.groups(cells, cells, torch.device("cpu"), window) for window in windows]

    first = step()
    assert not any(a is b for a, b in zip(first, step(), strict=True))  # every one rebuilt
    patch.keep_groups(len(windows))
    first = step()
    assert all(a is b for a, b in zip(first, step(), strict=True))
    patch.keep_groups(1)  # never below what it keeps
    assert patch.groups_kept == len(windows)
