"""Trajectories of latent cells from optical flow, at every latent grid the attention patches run at.

FLATTEN's rule, per latent grid: each cell of frame f is linked to the cell its flow lands on in frame
f + 1; when several cells land on one target, one of them keeps it; links chain from frame 0 on; a cell
that no chain reaches starts a new trajectory; so every cell of every frame belongs to exactly one
trajectory. A cell whose flow is unreliable (forward-backward check failed: occluded in the next
frame) or whose landing point leaves the frame ends its chain.

How a step from frame f to f + 1 is decided here (deterministic; loops over frames, not cells):

1. A chain carries its exact, sub-cell position p (a new chain starts at its cell's centre) and lands
   at p + flow(cell). FLATTEN rounds ``cell centre + flow`` each frame instead, so motion slower than
   half a cell per frame (most face motion on the 1/32 and 1/64 grids) is rounded away every frame and
   the chains stand still while the content moves; carrying p lets the motion add up.
2. Its candidate cells are those of the four cells around the landing point whose centre is less than
   one cell away, nearest first (ties in row-major order of the 2x2 block); none if its flow is unreliable;
   cells outside the grid are not candidates.
3. Every chain claims its nearest candidate. A cell claimed by several chains goes to, in order of
   preference: a chain whose second candidate is claimed by nobody yields to one whose is not free
   (the yielding chain has somewhere else to go); then the landing point nearest the cell's centre;
   then the lowest row-major source cell.
4. Chains left without a cell try their second, third and fourth candidates in turn, on cells still
   free, with the same nearest-then-lowest rule. Without step 3's first preference and step 4, two
   neighbouring chains that cross a cell border one frame apart (flow noise) collide, one of them ends
   and a new chain starts in the gap; with them, on the rotating/zooming test clip, the share of 1/8
   cells tracked over all 8 frames rose from 0.41 to 0.68.
5. Cells no chain took start new trajectories, numbered in row-major order.

Flow reaches each grid by area averaging: a cell's flow is the mean of its factor x factor pixels'
flow divided by the factor (so it is in cells); a cell's flow is reliable when at least half of its
pixels pass the forward-backward check. Cells are indexed row-major (``row * width + col``) for any
height != width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch

from .backends import FlowBackend
from .source_flow import FlowRecorder, SourceFlow
from .trajectory_set import TrajectoryGrid, TrajectorySet

LATENT_FACTORS = (8, 16, 32, 64)
"""Image-to-grid downscale factors of SD1.5's attention blocks (input/output 1/8, 1/16, 1/32; middle 1/64)."""


def level_grid(image_size: tuple[int, int], level: int) -> tuple[int, int]:
    """Latent grid (h, w) of a resolution level for frames of image_size (H, W) pixels: the VAE divides
    by 8, each UNet downsampling (stride-2 conv, padding 1) halves rounding up."""
    h, w = image_size[0] // 8, image_size[1] // 8
    for _ in range(level):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def check_frames(
    frames: torch.Tensor | np.ndarray | Sequence, multiple: int = max(LATENT_FACTORS)
) -> torch.Tensor:
    """Validates video frames and returns them as float32 RGB in 0..1.

    Grey is repeated to RGB, alpha dropped; uint8 is divided by 255, float is taken as 0..1 already.
    Refuses, with a ValueError that says what to do: fewer than 2 frames, frames of different sizes,
    other than 1, 3 or 4 channels, and sides that are not multiples of ``multiple`` (64: every latent grid
    down to 1/64 must have whole cells; the sampler sees the same frames, so nothing is padded or cropped
    here).

    Args:
        frames: a ComfyUI IMAGE tensor (float 0..1) or a numpy array of the same layout, or a sequence of
            single frames (tensors or arrays, float 0..1 or uint8 0..255).
        multiple: the number of pixels both sides must be a multiple of.
    Returns:
        the video, float32 RGB in 0..1, on the input's device (the CPU for numpy input).
    Shape:
        - frames: (F, H, W, C), or a sequence of F frames (H, W, C); F frames of H x W pixels, C = 1, 3
          or 4 channels.
        - Returns: (F, H, W, 3)
    """
    if isinstance(frames, (torch.Tensor, np.ndarray)) and frames.ndim == 4:
        video = torch.as_tensor(frames)  # one batch: a single size by construction, no copy
    else:
        frames = [
            torch.as_tensor(f)
            for f in ([frames] if isinstance(frames, (torch.Tensor, np.ndarray)) else frames)
        ]
        for i, frame in enumerate(frames):
            if frame.ndim == 3 and frame.shape[:2] != frames[0].shape[:2]:
                raise ValueError(
                    f"frames: frame {i} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is "
                    f"{frames[0].shape[1]}x{frames[0].shape[0]} (width x height); all frames must have one "
                    "size: resize them to a common size first"
                )
        if any(frame.ndim != 3 for frame in frames):
            shapes = sorted({tuple(frame.shape) for frame in frames})
            raise ValueError(
                f"frames: got frames of shape {shapes}; expected [height, width, channels] each (a ComfyUI "
                "IMAGE batch is [frames, height, width, channels])"
            )
        video = torch.stack(frames) if frames else torch.empty(0, 0, 0, 3)
    count, height, width, channels = video.shape
    if count < 2:
        raise ValueError(f"frames: got {count} frame(s); trajectories need a video of at least 2 frames")
    if channels not in (1, 3, 4):
        raise ValueError(
            f"frames: {channels} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA) as in a ComfyUI IMAGE "
            "[frames, height, width, channels]"
        )
    if height % multiple or width % multiple:
        raise ValueError(
            f"frames are {width}x{height} (width x height); both sides must be multiples of {multiple} so "
            f"that every latent grid down to 1/{multiple} has whole cells: resize to a multiple of "
            f"{multiple}, e.g. with the short_side input of Load Video (DiffFERV), before computing "
            "trajectories"
        )
    if video.shape[-1] == 1:
        video = video.expand(-1, -1, -1, 3)
    video = video[..., :3]
    return video.to(torch.float32) / 255.0 if video.dtype == torch.uint8 else video.to(torch.float32)


def pair_flows(frames: torch.Tensor, backend: FlowBackend) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The flow in both directions of each consecutive pair of ``frames``, one pair at a time.

    Forward carries frame f to f + 1, backward f + 1 to f; both come from one ``backend.compute`` call on
    a batch of two. One pair's flow is in memory at a time.

    Args:
        frames: the video, float RGB in 0..1.
        backend: the optical-flow backend.
    Returns:
        an iterator of (forward, backward) flow (dx, dy) in pixels, float32 (on the CPU for the backends
        here), in frame order.
    Shape:
        - frames: (F, H, W, 3), F frames of H x W pixels.
        - Returns: F - 1 pairs of (H, W, 2), (H, W, 2).
    """
    for f in range(frames.shape[0] - 1):
        a, b = frames[f : f + 1], frames[f + 1 : f + 2]
        both = backend.compute(torch.cat([a, b]), torch.cat([b, a]))
        yield both[0], both[1]


def area_flow(
    forward: torch.Tensor, reliable: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brings pixel flow to a grid of factor x factor pixel cells by area averaging.

    OpenCV's INTER_AREA resize (for a whole factor, the mean of each block), per pair.

    Args:
        forward: flow (dx, dy) in pixels, float, any device.
        reliable: bool, True where a pixel's flow passed the forward-backward check.
        factor: the side of a cell in pixels (H and W should be multiples of it).
    Returns:
        (flow, reliable) on the CPU: the cell flow (dx, dy) in cells (the pixel mean divided by
        ``factor``), float64; and bool, True where at least half the cell's pixels are reliable.
    Shape:
        - forward: (N, H, W, 2), N frame pairs of H x W pixels.
        - reliable: (N, H, W)
        - Returns: (N, h, w, 2) and (N, h, w), h = H // factor by w = W // factor cells.
    """
    _, height, width, _ = forward.shape
    size = (width // factor, height // factor)
    flows, shares = [], []
    for fwd, ok in zip(forward.detach().cpu().to(torch.float32).numpy(), reliable.cpu().numpy(), strict=True):
        flows.append(cv2.resize(fwd, size, interpolation=cv2.INTER_AREA))
        shares.append(cv2.resize(ok.astype(np.float32), size, interpolation=cv2.INTER_AREA))
    flow = torch.from_numpy(np.stack(flows)).to(torch.float64) / factor
    return flow, torch.from_numpy(np.stack(shares)) >= 0.5


def _pick(target: np.ndarray, keys: Sequence[np.ndarray], cells: int) -> np.ndarray:
    """Resolves claims: chain i (0..cells-1) claims cell ``target[i]`` (``cells`` = no claim). Returns
    [cells]: per cell the claiming chain with the smallest ``keys`` (lexicographic), then the smallest
    index; ``cells`` where nobody claims. A spare slot takes the non-claims, so every array stays
    full-length (no boolean indexing)."""
    keep = np.ones(target.shape, dtype=bool)
    for key in keys:
        key = np.where(keep, key, np.inf)
        best = np.full(cells + 1, np.inf)
        np.minimum.at(best, target, key)
        keep &= key == best[target]
    winner = np.full(cells + 1, cells)
    np.minimum.at(winner, target, np.where(keep, np.arange(target.shape[0]), cells))
    return winner[:cells]


def link_trajectories(flow: torch.Tensor, reliable: torch.Tensor) -> TrajectoryGrid:
    """Chains the cells of one grid into trajectories (the rule in the module docstring).

    Loops over frames (and the four candidate ranks) only; each step is a few dozen O(h*w) numpy
    operations (numpy, not torch: on arrays this small torch's thread pool costs more than it gives, and
    on a loaded machine far more). Memory: O(F * h * w).

    Args:
        flow: cell flow (dx, dy) in cells carrying frame f to frame f + 1, float, any device.
        reliable: bool, True where a cell's flow may be followed (False ends its chain).
    Returns:
        the trajectories of the grid, its tensors on the CPU.
    Shape:
        - flow: (F-1, h, w, 2), F frames of h x w cells.
        - reliable: (F-1, h, w)
        - Returns: a TrajectoryGrid with ids (F, h*w) and index (T, F), T trajectories.
    """
    steps, height, width, _ = flow.shape
    cells = height * width
    flow = flow.detach().cpu().to(torch.float64).reshape(steps, cells, 2).numpy()
    reliable = reliable.detach().cpu().reshape(steps, cells).numpy()
    ys, xs = np.meshgrid(
        np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
    )
    centres = np.stack([xs, ys], axis=-1).reshape(cells, 2)
    offset = np.array([0.0, 1.0])
    size = np.array([[width], [height]], dtype=np.float64)

    ids = np.empty((steps + 1, cells), dtype=np.int64)
    ids[0] = np.arange(cells)
    position = centres  # exact (x, y) of the chain through each cell of the current frame
    next_id = cells
    for f in range(steps):
        landing = position + flow[f]
        base = np.floor(landing)
        # the four cells around the landing point, in the order (0,0) (1,0) (0,1) (1,1) of (dx, dy)
        near = (landing - base)[:, :, None] - offset  # [cells, 2 (x, y), 2 (offset)]
        square = near * near
        miss = (square[:, 1, :, None] + square[:, 0, None, :]).reshape(cells, 4)
        corner = base[:, :, None] + offset  # [cells, 2 (x, y), 2 (offset)]
        inside = (corner >= 0) & (corner < size)
        usable = (inside[:, 1, :, None] & inside[:, 0, None, :]).reshape(cells, 4)
        usable &= (miss < 1.0) & reliable[f, :, None]
        index = (corner[:, 1, :, None] * width + corner[:, 0, None, :]).reshape(cells, 4).astype(np.int64)
        miss = np.where(usable, miss, np.inf)
        rank = np.argsort(miss, axis=1, kind="stable")
        miss = np.take_along_axis(miss, rank, axis=1)
        candidate = np.take_along_axis(np.where(usable, index, cells), rank, axis=1)

        claimed = np.zeros(cells + 1, dtype=bool)
        claimed[candidate[:, 0]] = True
        claimed[cells] = True  # "no candidate" is never free
        can_yield = (~claimed[candidate[:, 1]]).astype(np.float64)
        winner = _pick(candidate[:, 0], (can_yield, miss[:, 0]), cells)
        placed = np.zeros(cells + 1, dtype=bool)
        placed[winner] = True
        for r in range(1, 4):
            free = np.append(winner == cells, False)
            wanted = np.where(~placed[:cells] & free[candidate[:, r]], candidate[:, r], cells)
            taken = _pick(wanted, (miss[:, r],), cells)
            winner = np.where(free[:cells], taken, winner)
            placed[taken] = True

        reached = winner < cells
        source = np.minimum(winner, cells - 1)
        ids[f + 1] = np.where(reached, ids[f, source], np.cumsum(~reached) + (next_id - 1))
        next_id += cells - int(reached.sum())
        position = np.where(reached[:, None], landing[source], centres)
    return TrajectoryGrid.from_ids(torch.from_numpy(ids), height, width)


def trajectories_from_flows(
    flows: Iterable[tuple[torch.Tensor, torch.Tensor]],
    image_size: tuple[int, int],
    threshold: float,
    factors: Sequence[int] = LATENT_FACTORS,
    on_pair: Callable[[int], None] | None = None,
    backend: str = "given",
) -> TrajectorySet:
    """Trajectories at every grid ``image_size`` / factor from consecutive-pair flows.

    The forward flow and its reliable pixels are kept in the result (``TrajectorySet.flow``, 5 bytes per
    pixel per pair) for measuring an edit against them. Pairs are consumed one at a time: memory is that
    kept flow, one pair at image size in float32, plus O(F * h * w) per grid. No pairs at all is refused
    with a ValueError.

    Args:
        flows: (forward, backward) pixel flow (dx, dy) per consecutive pair, in frame order; forward
            carries frame f to f + 1, backward f + 1 to f.
        image_size: (H, W) of the frames in pixels.
        threshold: the forward-backward tolerance in pixels (see ``consistent_pixels``; <= 0: off).
        factors: image-to-grid downscale factors, one grid each.
        on_pair: called as ``on_pair(done)`` after each pair (progress, cancellation), or None.
        backend: the name of the flow's source, kept in the result.
    Returns:
        the trajectories at every grid, keyed (H // factor, W // factor), and the kept flow.
    Shape:
        - flows: F - 1 pairs of (H, W, 2), (H, W, 2); F frames of H x W pixels.
        - Returns: per grid of h x w cells, ids (F, h*w) and index (T, F), T trajectories; flow.forward
          (F-1, H, W, 2) float16 and flow.reliable (F-1, H, W) bool.
    """
    height, width = image_size
    per_factor: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {factor: [] for factor in factors}
    recorder = FlowRecorder(backend, threshold)
    pairs = 0
    for forward, backward in flows:
        forward = forward.unsqueeze(0)
        reliable = recorder.add(forward, backward.unsqueeze(0))
        for factor in factors:
            per_factor[factor].append(area_flow(forward, reliable, factor))
        pairs += 1
        if on_pair is not None:
            on_pair(pairs)
    if pairs == 0:
        raise ValueError("flows: no frame pairs given; trajectories need a video of at least 2 frames")
    grids = {}
    for factor, pooled in per_factor.items():
        flow = torch.cat([p[0] for p in pooled])
        reliable = torch.cat([p[1] for p in pooled])
        grids[(height // factor, width // factor)] = link_trajectories(flow, reliable)
    return TrajectorySet(frames=pairs + 1, image_size=(height, width), grids=grids, flow=recorder.result())


def build_trajectories(
    frames: torch.Tensor | np.ndarray | Sequence,
    backend: FlowBackend,
    threshold: float = 1.0,
    factors: Sequence[int] = LATENT_FACTORS,
    on_pair: Callable[[int], None] | None = None,
) -> TrajectorySet:
    """Optical flow (both directions) between consecutive ``frames`` with ``backend``, then trajectories.

    The frames are validated by ``check_frames`` (sides multiples of the largest factor); see
    ``trajectories_from_flows`` for what is kept and the memory.

    Args:
        frames: the video, anything ``check_frames`` accepts.
        backend: the optical-flow backend.
        threshold: forward-backward tolerance in pixels (<= 0: off).
        factors: image-to-grid downscale factors, one grid each.
        on_pair: called as ``on_pair(done)`` after each of the F - 1 pairs, or None.
    Returns:
        the trajectories at every grid H // factor x W // factor, and the kept forward flow.
    Shape:
        - frames: (F, H, W, C), or a sequence of F frames (H, W, C); F frames of H x W pixels, C = 1, 3
          or 4 channels.
        - Returns: per grid of h x w cells, ids (F, h*w) and index (T, F), T trajectories; flow.forward
          (F-1, H, W, 2) float16 and flow.reliable (F-1, H, W) bool.
    """
    video = check_frames(frames, max(factors))
    return trajectories_from_flows(
        pair_flows(video, backend), tuple(video.shape[1:3]), threshold, factors, on_pair, backend.name
    )


def compute_source_flow(
    frames: torch.Tensor,
    backend: FlowBackend,
    threshold: float = 1.0,
    on_pair: Callable[[int], None] | None = None,
) -> SourceFlow:
    """Only the flow that ``build_trajectories`` keeps, without trajectories.

    Both directions per pair with ``backend``; the frames are not validated (any size; fewer than 2
    frames is refused with a ValueError). Memory: the result, plus one pair.

    Args:
        frames: the video, float RGB in 0..1.
        backend: the optical-flow backend.
        threshold: forward-backward tolerance in pixels (<= 0: off).
        on_pair: called as ``on_pair(done)`` after each of the F - 1 pairs, or None.
    Returns:
        the forward flow, float16 on the CPU, and its reliable pixels.
    Shape:
        - frames: (F, H, W, 3), F >= 2 frames of H x W pixels.
        - Returns: forward (F-1, H, W, 2) and reliable (F-1, H, W).
    """
    recorder = FlowRecorder(backend.name, threshold)
    for done, (forward, backward) in enumerate(pair_flows(frames, backend), start=1):
        recorder.add(forward.unsqueeze(0), backward.unsqueeze(0))
        if on_pair is not None:
            on_pair(done)
    return recorder.result()
