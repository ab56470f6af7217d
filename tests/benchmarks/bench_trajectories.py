"""Trajectory construction and optical-flow speed; prints ``name=value`` lines.

    python tests/benchmarks/bench_trajectories.py

- ``link_<F>f_<h>x<w>_s``: linking one grid's trajectories (``link_trajectories``) from cell flow, F
  frames. Side by side, in the same run: ``python_same_rule_<F>f_<h>x<w>_s``, the same construction
  written with plain loops (tests/trajectory_reference.py, which the tests check equal), and
  ``python_flatten_style_<F>f_<h>x<w>_s``, a minimal pure-Python builder in FLATTEN's style (per-frame
  rounding from cell centres, first claim wins); ``speedup_*``: pure-Python time over ours;
  ``link_32f_over_16f_<h>x<w>``: time growth from 16 to 32 frames (2.0 = linear).
- ``from_flow_16f_512x512_s``: from 512x512 pixel flow (both directions) to trajectories on all four
  grids: forward-backward check, area averaging, linking.
- ``flow_<backend>_512x512_pair_s``: one flow between two 512x512 demo-clip frames (the node computes
  two per pair: forward and backward).
- ``demo_full_span_<F>f_<h>x<w>``: on the demo clip at 512x512 with DIS, the share of cells whose
  trajectory spans all F frames, per grid.
Cell flows are the demo clip's DIS flow area-averaged to each grid (real motion, real collisions).
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import conftest  # noqa: E402, F401  (registers the pack as comfyui_diffferv)
from comfyui_diffferv.flow.backends import DISFlow, FarnebackFlow  # noqa: E402
from comfyui_diffferv.flow.consistency import consistent_pixels  # noqa: E402
from comfyui_diffferv.flow.trajectories import (  # noqa: E402
    area_flow,
    link_trajectories,
    pair_flows,
    trajectories_from_flows,
)
from flow_clips import demo_frames  # noqa: E402
from trajectory_reference import naive_link  # noqa: E402


def best_of(repeats: int, fn) -> float:
    """Shortest wall time of ``repeats`` calls (the machine is shared: the minimum is the least noisy)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def python_flatten_style(flow: list, reliable: list, height: int, width: int) -> list[list[int]]:
    """FLATTEN-style builder in plain Python: per frame and cell, target = round(centre + flow); the first
    claim of a target wins; unreached cells start new ids. flow[f][cell] = (dx, dy), reliable[f][cell]."""
    cells = height * width
    ids = [list(range(cells))]
    next_id = cells
    for f in range(len(flow)):
        owner = {}
        for cell in range(cells):
            if not reliable[f][cell]:
                continue
            row, col = divmod(cell, width)
            tx, ty = round(col + flow[f][cell][0]), round(row + flow[f][cell][1])
            if 0 <= tx < width and 0 <= ty < height and ty * width + tx not in owner:
                owner[ty * width + tx] = cell
        frame_ids = []
        for cell in range(cells):
            if cell in owner:
                frame_ids.append(ids[-1][owner[cell]])
            else:
                frame_ids.append(next_id)
                next_id += 1
        ids.append(frame_ids)
    return ids


def main() -> None:
    torch.set_num_threads(2)
    frames = demo_frames(48, 512)
    flows = list(pair_flows(frames, DISFlow()))  # 47 pairs of [512, 512, 2], both directions
    cell_flows = {}
    for factor, width in ((8, 64), (8, 48)):  # 48x64: the 512x384 crop of the same flow
        pooled = [
            area_flow(
                f[None, :, : width * 8], consistent_pixels(f[None], b[None], 1.0)[:, :, : width * 8], factor
            )
            for f, b in flows
        ]
        cell_flows[(64, width)] = (torch.cat([p[0] for p in pooled]), torch.cat([p[1] for p in pooled]))

    for (height, width), (flow, reliable) in cell_flows.items():
        grid = f"{height}x{width}"
        seconds = {}
        for count in (16, 32):
            f, r = flow[: count - 1], reliable[: count - 1]
            seconds[count] = best_of(5, partial(link_trajectories, f, r))
            same = best_of(1, partial(naive_link, f.numpy(), r.numpy()))
            lists = (f.reshape(count - 1, -1, 2).tolist(), r.reshape(count - 1, -1).tolist(), height, width)
            flatten = best_of(2, partial(python_flatten_style, *lists))
            print(f"link_{count}f_{grid}_s={seconds[count]:.4f}")
            print(f"python_same_rule_{count}f_{grid}_s={same:.3f}")
            print(f"python_flatten_style_{count}f_{grid}_s={flatten:.3f}")
            print(f"speedup_same_rule_{count}f_{grid}={same / seconds[count]:.0f}")
            print(f"speedup_flatten_style_{count}f_{grid}={flatten / seconds[count]:.1f}")
        print(f"link_32f_over_16f_{grid}={seconds[32] / seconds[16]:.2f}")

    first16 = flows[:15]
    print(
        f"from_flow_16f_512x512_s={best_of(2, lambda: trajectories_from_flows(first16, (512, 512), 1.0)):.3f}"
    )
    a, b = frames[:1], frames[1:2]
    for backend in (DISFlow(), FarnebackFlow()):
        print(f"flow_{backend.name}_512x512_pair_s={best_of(5, partial(backend.compute, a, b)):.4f}")
    for count in (16, 48):
        trajectories = trajectories_from_flows(flows[: count - 1], (512, 512), 1.0)
        for (height, width), grid in trajectories.grids.items():
            print(f"demo_full_span_{count}f_{height}x{width}={grid.full_span_share:.3f}")


if __name__ == "__main__":
    main()
