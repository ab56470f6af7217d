"""Identity distances of the faces of an edit: against the source's faces, and along the edit's own frames.

Inputs are per-frame identity embeddings float [F, D] (dlib's 128-d descriptors, ``faces``), with NaN rows
for frames where no face was found; distances are Euclidean (dlib: the same person at about 0.35,
different people at about 0.8, decision threshold 0.6). A distance involving a frame without a face is NaN
and left out of every mean.

- source -> output: the distance between frame f of the source and frame f of the output (identity
  preservation, the papers' IDP as a distance).
- TL-ID, temporally local (Tzaban et al. 2022, DiffFERV Table 3): the distance between consecutive frames
  of one clip.
- TG-ID, temporally global: the mean distance over all pairs of frames of one clip; per frame, its mean
  distance to every other frame.
The papers report TL-ID and TG-ID as similarities normalised by the source's; here both clips' distances
are given side by side instead, in the descriptor's own units.
"""

from __future__ import annotations

import torch


def _nanmean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def paired_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance between row f of ``a`` and row f of ``b`` [F, D]: float64 [F]."""
    return (a.double() - b.double()).norm(dim=1)


def consecutive_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """TL-ID per pair: distance between frames f and f + 1, float64 [F-1]."""
    return paired_distances(embeddings[:-1], embeddings[1:])


def all_pair_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Distances between every two frames, float64 [F, F] (NaN where either has no face)."""
    e = embeddings.double()
    valid = torch.isfinite(e).all(dim=1)
    distances = torch.cdist(torch.where(valid[:, None], e, 0.0), torch.where(valid[:, None], e, 0.0))
    return distances.masked_fill(~(valid[:, None] & valid[None, :]), float("nan"))


def global_distances(embeddings: torch.Tensor) -> tuple[torch.Tensor, float]:
    """TG-ID: per frame its mean distance to every other frame with a face, float64 [F], and the mean
    over all pairs of distinct frames (NaN with fewer than two faces)."""
    distances = all_pair_distances(embeddings)
    frames = distances.shape[0]
    off_diagonal = ~torch.eye(frames, dtype=torch.bool)
    distances = distances.masked_fill(~off_diagonal, float("nan"))
    finite = torch.isfinite(distances)
    per_frame = torch.where(finite, distances, 0.0).sum(dim=1) / finite.sum(dim=1)
    return per_frame, _nanmean(distances[off_diagonal])


def clip_mean(values: torch.Tensor) -> float:
    """Mean over the finite values (NaN when there are none)."""
    return _nanmean(values)
