"""The TRAJECTORIES value passed between nodes: per latent grid, which cells form one trajectory.

A trajectory is a chain of latent cells, at most one per frame, over a contiguous run of frames. Every
cell of every frame belongs to exactly one trajectory (FLATTEN's rule). For one grid of h x w cells and
F frames, a trajectory set is stored in two equivalent forms:

- ``ids``   LongTensor [F, h*w]: the trajectory id (0..T-1) of each cell, cells in row-major order.
- ``index`` LongTensor [T, F]: for trajectory t, the flat token index ``frame * h*w + cell`` of its cell
  in each frame, or -1 for frames outside its run. Column f always holds frame f.

Memory is O(F * h * w) per grid for ``ids`` and O(T * F) for ``index`` (T <= F * h * w; T is about
h * w when tracking holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .source_flow import SourceFlow


@dataclass(frozen=True)
class TrajectoryGrid:
    """Trajectories on one latent grid of ``height`` x ``width`` cells over ``frames`` frames."""

    height: int
    width: int
    ids: torch.Tensor  # [F, h*w] int64
    index: torch.Tensor  # [T, F] int64, -1 = no cell in that frame

    @property
    def frames(self) -> int:
        return int(self.ids.shape[0])

    @property
    def count(self) -> int:
        """Number of trajectories T."""
        return int(self.index.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """[T] number of frames each trajectory spans."""
        return (self.index >= 0).sum(dim=1)

    @property
    def full_span_share(self) -> float:
        """Share of all cells (of all frames) whose trajectory spans every frame: 1.0 when tracking
        never breaks; each such trajectory holds F of the F * h * w cells."""
        return float((self.lengths == self.frames).sum()) / (self.height * self.width)

    @staticmethod
    def from_ids(ids: torch.Tensor, height: int, width: int) -> TrajectoryGrid:
        """Builds the padded ``index`` form from per-cell trajectory ids.

        Done in numpy: a single scatter of F*h*w tokens, which torch's thread pool only slows down (badly
        so when the machine's cores are busy). A cell count other than ``height * width`` is refused with
        a ValueError.

        Args:
            ids: the trajectory id of each cell, cells in row-major order, any integer dtype, any device;
                ids must be 0..T-1, each id at most once per frame, every id used (not checked).
            height: h, the grid's height in cells.
            width: w, the grid's width in cells.
        Returns:
            the grid, with ``ids`` as int64 and ``index`` int64 (-1: no cell in that frame), both on the
            device of ``ids``.
        Shape:
            - ids: (F, h*w), F frames of h x w cells.
            - Returns: a TrajectoryGrid with ids (F, h*w) and index (T, F), T = max id + 1 trajectories.
        """
        frames, cells = ids.shape
        if cells != height * width:
            raise ValueError(f"ids has {cells} cells per frame, expected {height}x{width}={height * width}")
        flat = ids.detach().cpu().to(torch.long).numpy().reshape(-1)
        index = np.full((int(flat.max()) + 1, frames), -1, dtype=np.int64)
        index[flat, np.repeat(np.arange(frames), cells)] = np.arange(frames * cells)
        return TrajectoryGrid(height, width, ids.to(torch.long), torch.from_numpy(index).to(ids.device))

    def restrict(self, frames: Sequence[int]) -> TrajectoryGrid:
        """The trajectories seen through some of the clip's frames (a context window): column p of the
        result is clip frame ``frames[p]``; two cells are on one trajectory of the result when they are on
        one trajectory of the clip. Frames may come in any order and skip frames (a looped or strided
        window), so a trajectory of the result need not cover a contiguous run. Memory O(len(frames) *
        h * w)."""
        ids = self.ids[torch.as_tensor(list(frames), dtype=torch.long, device=self.ids.device)]
        _, relabelled = torch.unique(ids, return_inverse=True)
        return TrajectoryGrid.from_ids(relabelled.reshape(ids.shape), self.height, self.width)


@dataclass(frozen=True)
class TrajectorySet:
    """Trajectories of one clip at every latent grid the attention patches run at.

    ``grids`` maps (h, w) in latent cells to its TrajectoryGrid; ``image_size`` is the (H, W) in pixels
    of the frames the flow was computed on; ``frames`` their count; ``flow`` that pixel flow (forward,
    with its reliable pixels), when the builder kept it.
    """

    frames: int
    image_size: tuple[int, int]
    grids: dict[tuple[int, int], TrajectoryGrid] = field(default_factory=dict)
    flow: SourceFlow | None = None

    def grid(self, height: int, width: int) -> TrajectoryGrid:
        """The trajectories for a latent grid of height x width cells; a clear error if absent."""
        try:
            return self.grids[(height, width)]
        except KeyError:
            have = ", ".join(f"{h}x{w}" for h, w in sorted(self.grids)) or "none"
            raise KeyError(
                f"no trajectories for a {height}x{width} latent grid (have: {have}); the trajectories were "
                f"computed for {self.image_size[1]}x{self.image_size[0]} frames: compute them from the same "
                "frames that are encoded to the latent"
            ) from None
