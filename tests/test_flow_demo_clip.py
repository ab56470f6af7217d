"""The demo clip (a talking head, workflows/media/talking_face.mp4) through DIS flow and the builder:
prints, per latent grid, the share of cells whose trajectory spans all frames (pytest -s shows it)."""

import pytest
from comfyui_diffferv.flow.backends import DISFlow
from comfyui_diffferv.flow.trajectories import build_trajectories
from flow_clips import demo_frames


@pytest.mark.parametrize("size", [512, 384])
def test_demo_clip_full_span_share_per_grid(size):
    frames = demo_frames(16, size)
    trajectories = build_trajectories(frames, DISFlow(), threshold=1.0)
    shares = {f"{h}x{w}": grid.full_span_share for (h, w), grid in sorted(trajectories.grids.items())}
    print(f"demo clip, 16 frames at {size}x{size}, full-span share per grid:", shares)
    assert len(shares) == 4
    # a talking head over 0.6 s moves little: nearly every cell is tracked throughout, more so on
    # coarser grids (the trajectories that end sit on the moving face; the background holds)
    assert all(share >= 0.9 for share in shares.values()), shares
    ordered = [shares[f"{size // f}x{size // f}"] for f in (8, 16, 32, 64)]
    assert ordered[0] <= ordered[-1]
