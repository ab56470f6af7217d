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
    ) -> torch.Tensor: ...


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask=None, **kwargs
) -> torch.Tensor:
    """Multi-head attention with torch's scaled_dot_product_attention, in ComfyUI's layout and signature
    (extra keyword arguments such as ``attn_precision`` or ``transformer_options`` are accepted and
    ignored). Memory: whatever the selected SDPA kernel needs (at most B*heads*Nq*Nk for the math one)."""
    out = F.scaled_dot_product_attention(
        split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), mask
    )
    return merge_heads(out)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, heads*d] -> [B, heads, N, d] (a view)."""
    b, n, inner = x.shape
    return x.view(b, n, heads, inner // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads*d]."""
    b, heads, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * d)


MapEdit = Callable[[torch.Tensor, slice], torch.Tensor]
"""(maps [B, heads, n, Nk] of the query tokens `slice`, float32; that slice) -> the maps to apply to v."""


def attention_with_maps(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, edit: MapEdit, max_bytes: int
) -> torch.Tensor:
    """Attention whose maps softmax(q k^T / sqrt(d)) per head are made explicit, so that `edit` may record
    or replace them, computed over slices of the query tokens: q [B, Nq, heads*d], k and v
    [B, Nk, heads*d] -> [B, Nq, heads*d] in v's dtype. Each slice's maps are computed in float32 and
    handed to `edit` before they are applied. Memory: the output plus one slice's scores, maps and edited
    maps (about 4 * B * heads * n * Nk floats, n query tokens chosen so that this stays under
    `max_bytes`; used for cross-attention, where Nk is the prompt's token count)."""
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
