"""Trajectory-based Temporal Attention (TTA, DiffFERV section 3.3, equation 8).

Each token attends to the tokens on its own trajectory across all frames. Every token lies on exactly
one trajectory (TRAJECTORIES, see ``flow/trajectory_set.py``), so TTA is attention *inside groups*:
gather each trajectory's queries, keys and values once, attend within the group, scatter the result
back. Nothing is copied per token: FLATTEN builds, for every token, its own [F, d] copy of the keys and
values of its trajectory ((B*F, heads, HW, F, d) tensors, O(F^2 * HW) memory); here each trajectory's
keys exist once (O(F * HW)).

Trajectories are grouped by length (the tokens on them; in a context window a trajectory may skip
frames of the batch, see ``TrajectoryGrid.restrict``), so each group is a dense [T_L, L] block: no
padding, no key mask, and ComfyUI's optimized attention runs unmodified with a batch of trajectories
and L tokens each. The loop runs over distinct lengths (at most F) and pieces that fit the memory budget
(``memory.WORK_BYTES``), never over tokens. Every token lies on one trajectory, so the output may be
written over the values themselves (``out=v``): each piece gathers its trajectories' values before it
writes their results, and no other piece reads them.

What Q, K and V are (the patch in ``patches.py`` passes them in):

- Q_TTA = v_{i,p_i} W_Q and K_TTA = [v_{1,p_1} .. v_{m,p_m}] W_K: the paper's equation 8 uses the
  self-attention block's own projections of the block input v, the same q and k that SWCFA gets
  (TTA is training-free: there are no other weights). FLATTEN's code offers this as its ``old_qk=1``
  mode; its default instead reuses the spatial attention output as Q = K = V, which has no W_Q/W_K
  and so does not match the paper's equation.
- V_TTA: the SWCFA output of the same block (heads merged, before ``to_out``). The paper is silent
  on how the two attentions compose; its Fig. 2 chains SWCFA -> TTA -> cross-attention inside one
  UNet layer, and FLATTEN (both modes) feeds the spatial attention output as the trajectory values and
  applies ``to_out`` once after the trajectory attention. We do the same, so the whole SWCFA -> TTA
  chain is one attn1 replacement and ``to_out`` follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..flow.trajectory_set import TrajectoryGrid
from .functional import AttentionFn, frames_per_chunk, sdpa_attention
from .memory import WORK_BYTES, pieces


@dataclass(frozen=True)
class TrajectoryGroups:
    """One latent grid's trajectories as dense blocks of equal length.

    ``buckets[j]`` is a LongTensor [T_L, L]: the flat token indices ``frame * cells + cell`` of the T_L
    trajectories that hold exactly L tokens, in frame order. Every token of the F frames appears in
    exactly one bucket row. Memory: F * cells indices.
    """

    frames: int
    cells: int
    buckets: tuple[torch.Tensor, ...]

    @staticmethod
    def from_grid(grid: TrajectoryGrid) -> TrajectoryGroups:
        """Validate a TrajectoryGrid (every token on exactly one trajectory, column f = frame f) and group
        its trajectories by length. A trajectory may skip columns (a context window's view of a clip, see
        ``TrajectoryGrid.restrict``): each bucket row lists its tokens in column order."""
        frames, cells = grid.frames, grid.height * grid.width
        index = grid.index
        if index.ndim != 2 or index.shape[1] != frames:
            raise ValueError(
                f"TRAJECTORIES grid {grid.height}x{grid.width}: index must be [T, {frames}], got "
                f"{list(index.shape)}; rebuild the trajectories"
            )
        valid = index >= 0
        frame_of = torch.arange(frames).expand_as(index)
        if bool(((index // cells != frame_of) & valid).any()):
            raise ValueError(
                f"TRAJECTORIES grid {grid.height}x{grid.width}: an entry in column f is not a token of "
                "frame f; rebuild the trajectories"
            )
        counts = torch.bincount(index[valid], minlength=frames * cells)
        if counts.numel() != frames * cells or bool((counts != 1).any()):
            raise ValueError(
                f"TRAJECTORIES grid {grid.height}x{grid.width}: every token of the {frames} frames must "
                "lie on exactly one trajectory; rebuild the trajectories"
            )
        lengths = valid.sum(dim=1)
        # each row's valid entries first, in column order (a stable sort of the "missing" flags)
        compact = torch.gather(index, 1, torch.argsort((~valid).to(torch.int8), dim=1, stable=True))
        buckets = []
        for length in torch.unique(lengths).tolist():
            rows = torch.nonzero(lengths == length).squeeze(1)
            buckets.append(compact[rows, :length])
        return TrajectoryGroups(frames, cells, tuple(buckets))

    def to(self, device: torch.device) -> TrajectoryGroups:
        return TrajectoryGroups(self.frames, self.cells, tuple(b.to(device) for b in self.buckets))


def trajectory_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    groups: TrajectoryGroups,
    chunks: int,
    heads: int,
    attention_fn: AttentionFn = sdpa_attention,
    max_bytes: int = WORK_BYTES,
    out: torch.Tensor | None = None,
    **attention_kwargs,
) -> torch.Tensor:
    """TTA over a chunked batch: each token attends to the tokens on its own trajectory across frames.

    Row c*F + f of the batch is frame f of chunk c. Trajectories never cross chunks. A trajectory of one
    frame returns its value unchanged (attention over a single key).

    Memory: the output (none with ``out=v``) plus one piece at a time: the gathered q, k, v, the result,
    its reshaped copy and the attention scores of as many trajectories as fit in `max_bytes` (at least
    one). Peak memory is therefore linear in frames; time is proportional to sum over trajectories of L^2
    (L the trajectory's length; at most F * the token count).

    Args:
        q: the queries, heads not split.
        k: the keys, heads not split.
        v: the values, heads not split (in the attn1 patch: the SWCFA output).
        groups: the trajectories of this latent grid (and context window) as `TrajectoryGroups`, on q's
            device; its frames and cells must be F and N.
        chunks: the number of chunks K in the batch; the batch size must be a multiple of it.
        heads: the head count H; the last dimension of q, k and v is H * D.
        attention_fn: the attention function that does the work (ComfyUI's optimized attention in the
            node, torch SDPA by default).
        max_bytes: the work-set budget of one piece, in bytes.
        out: where the result is written (it may be `v` itself), contiguous; None: a new tensor.
        attention_kwargs: extra keyword arguments passed on to `attention_fn`.
    Returns:
        The attention output, heads merged: a view of `out` when given, else a new tensor in v's dtype.
    Shape:
        - q: (K*F, N, H*D), K chunks, F frames per chunk, N tokens per frame (the grid's cells), H heads,
          D head dim.
        - k: (K*F, N, H*D)
        - v: (K*F, N, H*D)
        - out: (K*F, N, H*D)
        - Returns: (K*F, N, H*D)
    """
    frames = frames_per_chunk(q.shape[0], chunks)
    tokens, inner = q.shape[1], q.shape[2]
    if frames != groups.frames or tokens != groups.cells:
        raise ValueError(
            f"TRAJECTORIES were built for {groups.frames} frames of {groups.cells} cells, but the attention "
            f"sees {frames} frames of {tokens} cells: compute the trajectories from the same frames as the "
            "latent"
        )
    qf, kf, vf = (x.reshape(chunks, frames * tokens, inner) for x in (q, k, v))
    result = torch.empty_like(vf) if out is None else out.view(chunks, frames * tokens, inner)
    in_place = result.data_ptr() == vf.data_ptr()
    for bucket in groups.buckets:
        count, length = bucket.shape
        if length == 1:
            if not in_place:
                flat = bucket.reshape(-1)
                result.index_copy_(1, flat, vf.index_select(1, flat))
            continue
        # gathered q, k, v, the attention's output and its reshaped copy, and the scores
        per_trajectory = chunks * length * (5 * inner + heads * length) * q.element_size()
        step = pieces(count, per_trajectory, max_bytes)
        for start in range(0, count, step):
            flat = bucket[start : start + step].reshape(-1)
            n = flat.numel() // length
            qg, kg, vg = (x.index_select(1, flat).view(chunks * n, length, inner) for x in (qf, kf, vf))
            attended = attention_fn(qg, kg, vg, heads, **attention_kwargs)
            result.index_copy_(1, flat, attended.reshape(chunks, n * length, inner))
    return result.view(chunks * frames, tokens, inner)
