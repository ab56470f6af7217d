"""Attention primitives shared by the temporal attention and the cross-attention map control.

Tensors use ComfyUI's attention layout: q [B, Nq, heads*dim_head], k and v [B, Nk, heads*dim_head], heads
not split. An *attention function* has ComfyUI's `optimized_attention` signature
``fn(q, k, v, heads, mask=None, **kwargs) -> [B, Nq, heads*dim_head]``; the ComfyUI glue passes
ComfyUI's own one in, the pure code defaults to `sdpa_attention`.

A batch handed to a ComfyUI attention patch is made of *chunks* (one per entry of
``extra_options["cond_or_uncond"]``), each holding the F frames of the clip in order: row ``c * F + f``
is frame f of chunk c.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F  # noqa: N812

from .memory import pieces


class AttentionFn(Protocol):
    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask=None, **kwargs
    ) -> torch.Tensor:
        """Multi-head attention softmax(q k^T / sqrt(D)) v in ComfyUI's layout (``optimized_attention``).

        Args:
            q: the queries, heads not split.
            k: the keys, heads not split.
            v: the values, heads not split.
            heads: the head count H; the last dimension of q, k and v is H * D.
            mask: an attention mask or bias added to the scores, or None (no mask).
            kwargs: extra keyword arguments of ComfyUI's attention (e.g. ``attn_precision``,
                ``transformer_options``); a function may ignore those it does not use.
        Returns:
            The attention output, heads merged.
        Shape:
            - q: (B, Nq, H*D), B batch rows, Nq query tokens, H heads, D head dim.
            - k: (B, Nk, H*D), Nk key tokens.
            - v: (B, Nk, H*D)
            - Returns: (B, Nq, H*D)
        """
        ...


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask=None, **kwargs
) -> torch.Tensor:
    """Multi-head attention with torch's scaled_dot_product_attention, in ComfyUI's layout and signature.

    Memory: whatever the selected SDPA kernel needs (at most B*H*Nq*Nk for the math one).

    Args:
        q: the queries, heads not split.
        k: the keys, heads not split.
        v: the values, heads not split.
        heads: the head count H; the last dimension of q, k and v is H * D.
        mask: passed to SDPA as ``attn_mask`` as it is (a boolean mask or an additive float bias that
            broadcasts to (B, H, Nq, Nk)), or None.
        kwargs: ComfyUI's extra keyword arguments (such as ``attn_precision`` or
            ``transformer_options``): accepted and ignored.
    Returns:
        The attention output, heads merged, in v's dtype.
    Shape:
        - q: (B, Nq, H*D), B batch rows, Nq query tokens, H heads, D head dim.
        - k: (B, Nk, H*D), Nk key tokens.
        - v: (B, Nk, H*D)
        - mask: broadcastable to (B, H, Nq, Nk)
        - Returns: (B, Nq, H*D)
    """
    out = F.scaled_dot_product_attention(
        split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), mask
    )
    return merge_heads(out)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Split the heads out of ComfyUI's merged layout, for torch's attention.

    Args:
        x: queries, keys or values with the heads merged in the last dimension (its last dimension must
            have stride 1).
        heads: the head count H; x's last dimension must be a multiple of it.
    Returns:
        A view of x with the heads as dimension 1 (no copy).
    Shape:
        - x: (B, N, H*D), B batch rows, N tokens, H heads, D head dim.
        - Returns: (B, H, N, D)
    """
    b, n, inner = x.shape
    return x.view(b, n, heads, inner // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Merge the heads back into ComfyUI's layout (the inverse of `split_heads`).

    Args:
        x: an attention output with the heads as dimension 1.
    Returns:
        x with the heads merged into the last dimension (a copy unless x's layout allows a view).
    Shape:
        - x: (B, H, N, D), B batch rows, H heads, N tokens, D head dim.
        - Returns: (B, N, H*D)
    """
    b, heads, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * d)


MapEdit = Callable[[torch.Tensor, slice], torch.Tensor]
"""(maps [B, heads, n, Nk] of the query tokens `slice`, float32; that slice) -> the maps to apply to v."""


def attention_with_maps(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, edit: MapEdit, max_bytes: int
) -> torch.Tensor:
    """Attention whose maps softmax(q k^T / sqrt(D)) per head are made explicit, so that `edit` may record
    or replace them.

    The maps are computed over slices of the query tokens: each slice's maps are computed in float32 and
    handed to `edit` before they are applied. Memory: the output plus one slice's scores, maps and edited
    maps (about 4 * B * H * n * Nk floats, n query tokens chosen so that this stays under `max_bytes`;
    used for cross-attention, where Nk is the prompt's token count).

    Args:
        q: the queries, heads not split.
        k: the keys, heads not split.
        v: the values, heads not split.
        heads: the head count H; the last dimension of q, k and v is H * D.
        edit: called once per slice with the slice's maps (float32) and the slice of query tokens they
            belong to; returns the maps to apply to v (it may edit and return its argument in place).
        max_bytes: the work-set budget of one slice, in bytes (at least one query token per slice).
    Returns:
        The attention output with the edited maps, heads merged, in v's dtype and on v's device.
    Shape:
        - q: (B, Nq, H*D), B batch rows, Nq query tokens, H heads, D head dim.
        - k: (B, Nk, H*D), Nk key tokens.
        - v: (B, Nk, H*D)
        - edit: takes and returns maps (B, H, n, Nk), n the query tokens of the slice.
        - Returns: (B, Nq, H*D)
    """
    batch, tokens, inner = q.shape
    out = torch.empty(batch, tokens, v.shape[-1], dtype=v.dtype, device=v.device)
    kt, vh = split_heads(k, heads).transpose(-1, -2).float(), split_heads(v, heads)
    scale = (inner // heads) ** -0.5
    step = pieces(tokens, 4 * batch * heads * k.shape[1] * 4, max_bytes)
    for start in range(0, tokens, step):
        part = slice(start, min(start + step, tokens))
        maps = torch.softmax(torch.matmul(split_heads(q[:, part], heads).float(), kt) * scale, dim=-1)
        out[:, part] = merge_heads(torch.matmul(edit(maps, part).to(v.dtype), vh))
    return out


def frames_per_chunk(batch: int, chunks: int) -> int:
    """F from a patch's batch size and its chunk count, with a clear error if they do not divide."""
    if chunks < 1 or batch % chunks:
        raise ValueError(
            f"attention batch of {batch} rows cannot be split into {chunks} chunks of equal frame count "
            "(extra_options['cond_or_uncond'], or the explicit chunk roles, must list one entry per chunk "
            "of the clip's frames)"
        )
    return batch // chunks
