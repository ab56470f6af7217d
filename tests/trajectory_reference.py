"""Reference implementations of the trajectory rule, written out cell by cell with plain loops.

Used by the tests (equality with flow/trajectories.py on random flows) and by the benchmark (the same
construction in pure Python, timed side by side).
"""

from __future__ import annotations

import math

import numpy as np


def naive_link(flow: np.ndarray, reliable: np.ndarray) -> np.ndarray:
    """The trajectory rule (flow/trajectories.py's docstring) written out cell by cell: flow [F-1, h, w,
    2] (dx, dy in cells), reliable [F-1, h, w]. Returns ids [F, h*w]."""
    steps, h, w, _ = flow.shape
    ids = [list(range(h * w))]
    position = [(float(cell % w), float(cell // w)) for cell in range(h * w)]
    next_id = h * w
    for f in range(steps):
        candidates, landing = [], []
        for cell in range(h * w):
            row, col = divmod(cell, w)
            x, y = (
                position[cell][0] + float(flow[f, row, col, 0]),
                position[cell][1] + float(flow[f, row, col, 1]),
            )
            landing.append((x, y))
            around = []
            for cx, cy in [(0, 0), (1, 0), (0, 1), (1, 1)]:
                cx, cy = math.floor(x) + cx, math.floor(y) + cy
                miss = (x - cx) ** 2 + (y - cy) ** 2
                if reliable[f, row, col] and miss < 1.0 and 0 <= cx < w and 0 <= cy < h:
                    around.append((miss, cy * w + cx))
            candidates.append(sorted(around, key=lambda c: c[0]))  # stable: ties keep corner order
        first_claims = {c[0][1] for c in candidates if c}
        owner = {}  # target cell -> (preference key, source)
        for cell, cand in enumerate(candidates):
            if not cand:
                continue
            can_yield = len(cand) > 1 and cand[1][1] not in first_claims
            key = (can_yield, cand[0][0], cell)
            if cand[0][1] not in owner or key < owner[cand[0][1]][0]:
                owner[cand[0][1]] = (key, cell)
        placed = {source for _, source in owner.values()}
        for r in range(1, 4):
            round_owner = {}
            for cell, cand in enumerate(candidates):
                if cell in placed or len(cand) <= r or cand[r][1] in owner:
                    continue
                key = (cand[r][0], cell)
                if cand[r][1] not in round_owner or key < round_owner[cand[r][1]][0]:
                    round_owner[cand[r][1]] = (key, cell)
            owner.update(round_owner)
            placed |= {source for _, source in round_owner.values()}
        frame_ids, new_position = [], []
        for cell in range(h * w):
            if cell in owner:
                source = owner[cell][1]
                frame_ids.append(ids[-1][source])
                new_position.append(landing[source])
            else:
                frame_ids.append(next_id)
                next_id += 1
                new_position.append((float(cell % w), float(cell // w)))
        ids.append(frame_ids)
        position = new_position
    return np.array(ids)


def naive_index(ids: np.ndarray) -> np.ndarray:
    """[T, F] flat token index per trajectory and frame, -1 where absent, by looping over cells."""
    frames, cells = ids.shape
    index = -np.ones((ids.max() + 1, frames), dtype=np.int64)
    for f in range(frames):
        for cell in range(cells):
            index[ids[f, cell], f] = f * cells + cell
    return index
