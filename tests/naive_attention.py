"""Straightforward loop references for the temporal attention (tests only): one query frame or one token
at a time, written from the paper's formulas, no batching tricks."""

from __future__ import annotations

import torch
from comfyui_diffferv.flow.trajectory_set import TrajectoryGrid


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax attention of q [Nq, C] over k, v [Nk, C] -> [Nq, C], head by head."""
    d = q.shape[-1] // heads
    out = []
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[:, part] @ k[:, part].T / d**0.5, dim=-1)
        out.append(weights @ v[:, part])
    return torch.cat(out, dim=-1)


def swcfa(q, k, v, chunks: int, window: int, heads: int) -> torch.Tensor:
    """Paper eq. 6 with 1-based frames: frame i attends to frames max(i - w//2, 1) .. min(i + w//2, m)."""
    m = q.shape[0] // chunks
    out = torch.empty_like(q)
    for c in range(chunks):
        for i in range(1, m + 1):
            first, last = max(i - window // 2, 1), min(i + window // 2, m)
            rows = [c * m + j - 1 for j in range(first, last + 1)]
            out[c * m + i - 1] = attend(
                q[c * m + i - 1], torch.cat([k[r] for r in rows]), torch.cat([v[r] for r in rows]), heads
            )
    return out


def tta(q, k, v, grid: TrajectoryGrid, chunks: int, heads: int) -> torch.Tensor:
    """Paper eq. 8: token p of frame i attends to every token on its trajectory, token by token."""
    frames, cells = grid.ids.shape
    out = torch.empty_like(q)
    for c in range(chunks):
        for f in range(frames):
            for n in range(cells):
                members = [int(t) for t in grid.index[int(grid.ids[f, n])] if t >= 0]
                keys = torch.stack([k[c * frames + t // cells, t % cells] for t in members])
                values = torch.stack([v[c * frames + t // cells, t % cells] for t in members])
                out[c * frames + f, n] = attend(q[c * frames + f, n][None], keys, values, heads)[0]
    return out


def random_trajectories(frames: int, height: int, width: int, keep: float, seed: int) -> TrajectoryGrid:
    """Uneven trajectories: frame 0 starts one per cell; in each later frame every cell continues a
    random trajectory alive in the previous frame with probability `keep`, else starts a new one."""
    generator = torch.Generator().manual_seed(seed)
    cells = height * width
    ids = torch.empty(frames, cells, dtype=torch.long)
    ids[0] = torch.randperm(cells, generator=generator)
    next_id = cells
    for f in range(1, frames):
        continues = torch.rand(cells, generator=generator) < keep
        parents = ids[f - 1][torch.randperm(cells, generator=generator)]
        fresh = torch.arange(next_id, next_id + int((~continues).sum()))
        next_id += fresh.numel()
        ids[f] = parents
        ids[f][~continues] = fresh
    return TrajectoryGrid.from_ids(ids, height, width)


def single_frame_trajectories(frames: int, height: int, width: int) -> TrajectoryGrid:
    cells = height * width
    return TrajectoryGrid.from_ids(torch.arange(frames * cells).view(frames, cells), height, width)
