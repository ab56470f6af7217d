"""The features the preservation control records and injects, and where they are kept: `Feature` (a
self-attention block's (q, k), a cross-attention block's maps), `BlockKey` (which attention block), and
`FeatureStore`, the features of every step and block, per context window (``control.py`` records into it
and injects from it). Plain torch; no ComfyUI."""

from __future__ import annotations

from enum import Enum

import torch

from ..windows.frames import FrameWindow, describe

BlockKey = tuple[str, int, int]
"""(block name, block number, transformer index inside it), e.g. ("input", 1, 0)."""


class Feature(str, Enum):
    SELF_QK = "self_qk"
    CROSS_MAPS = "cross_maps"


class FeatureStore:
    """Recorded features keyed by (step, block, feature) and context window (None: the whole clip), kept
    on `device` (None: where they were computed) in `dtype` (None, the default: the UNet's own dtype, so a
    bf16 model's features keep bf16's range; the paper stores fp16). Memory per step and self-attention
    block: 2 * F * N * heads*d values for SELF_QK; per cross-attention block: F * heads * N * context
    tokens for CROSS_MAPS, with F the frames of the window (overlapping windows each keep their own)."""

    def __init__(self, dtype: torch.dtype | None = None, device: torch.device | str | None = "cpu"):
        self.dtype = dtype
        self.device = None if device is None else torch.device(device)
        self._items: dict[FrameWindow | None, dict[tuple[int, BlockKey, Feature], tuple[torch.Tensor, ...]]]
        self._items = {}

    def put(
        self,
        step: int,
        block: BlockKey,
        feature: Feature,
        *tensors: torch.Tensor,
        window: FrameWindow | None = None,
    ) -> None:
        """Record a feature: a detached copy of each tensor, on the store's device and in its dtype (each
        tensor's own where those are None), replacing what was held under the same key.

        Args:
            step: the step index of the run's schedule.
            block: the attention block.
            feature: which feature the tensors are.
            tensors: the feature's tensors, e.g. (q, k) of the recorded chunk for SELF_QK.
            window: the context window the tensors belong to (None: the whole clip).
        Shape:
            - tensors: any; SELF_QK's q and k are (F, N, C) each, F frames, N tokens per frame, C channels
              (heads * head dim).
        """
        self._items.setdefault(window, {})[(step, block, feature)] = tuple(
            t.detach().to(device=self.device or t.device, dtype=self.dtype or t.dtype, copy=True)
            for t in tensors
        )

    def put_part(
        self,
        step: int,
        block: BlockKey,
        feature: Feature,
        part: torch.Tensor,
        where: slice,
        length: int,
        window: FrameWindow | None = None,
    ) -> None:
        """Record one slice of a feature along dimension 2 (the query tokens of cross-attention maps).

        The whole tensor is allocated at the first slice (``where.start == 0``, or no entry under the key
        yet), on the store's device and in its dtype (part's own where those are None); later slices are
        copied into it, so a feature recorded in slices is never held twice.

        Args:
            step: the step index of the run's schedule.
            block: the attention block.
            feature: which feature the slice belongs to (CROSS_MAPS).
            part: positions `where` of the feature along dimension 2.
            where: the positions `part` holds along dimension 2, with an integer start.
            length: the feature's whole size along dimension 2 (N).
            window: the context window the feature belongs to (None: the whole clip).
        Shape:
            - part: (F, H, n, T), F frames, H heads, n query tokens of the slice, T context (prompt) tokens;
              the whole feature is (F, H, N, T), N the block's query tokens.
        """
        items = self._items.setdefault(window, {})
        key = (step, block, feature)
        if where.start == 0 or key not in items:
            shape = (*part.shape[:2], length, *part.shape[3:])
            items[key] = (
                torch.empty(shape, dtype=self.dtype or part.dtype, device=self.device or part.device),
            )
        items[key][0][:, :, where].copy_(part.detach(), non_blocking=True)

    def clear(self) -> None:
        self._items.clear()

    def get(
        self, step: int, block: BlockKey, feature: Feature, window: FrameWindow | None = None
    ) -> tuple[torch.Tensor, ...]:
        """The tensors recorded under (step, block, feature) for `window`.

        A KeyError says why when nothing is held there (another window, step, block or schedule).

        Args:
            step: the step index of the run's schedule.
            block: the attention block.
            feature: which feature.
            window: the context window (None: the whole clip).
        Returns:
            The recorded tensors themselves (not copies), on the store's device: do not modify them.
        Shape:
            - Returns: SELF_QK: ((F, N, C), (F, N, C)), F frames, N tokens per frame, C channels (heads *
              head dim); CROSS_MAPS: ((F, H, N, T),), H heads, T context (prompt) tokens.
        """
        try:
            return self._items[window][(step, block, feature)]
        except KeyError:
            if self._items and window not in self._items:
                held = ", ".join(describe(w) for w in list(self._items)[:4]) or "nothing"
                raise KeyError(
                    f"no cached features for {describe(window)} (the cache holds {held}): the inversion ran "
                    "with other context windows; give DDIM Invert With Cache and the sampler the same MODEL "
                    "(same context windows, a static schedule) or use cache_mode recompute"
                ) from None
            raise KeyError(
                f"no cached {feature.value} for step {step} at block {block}: the cache was recorded with "
                "another schedule, model patching or resolution; run the inversion again with this model"
            ) from None

    def recorded(self, window: FrameWindow | None = None) -> list[tuple[int, BlockKey, Feature]]:
        """The (step, block, feature) keys held for `window`, in recording order."""
        return list(self._items.get(window, {}))

    def windows(self) -> list[FrameWindow | None]:
        """The windows features were recorded for, in recording order (None: the whole clip)."""
        return list(self._items)

    def __len__(self) -> int:
        return sum(len(items) for items in self._items.values())

    @property
    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for items in self._items.values()
            for ts in items.values()
            for t in ts
        )
