"""Capture and override of preservation features (DiffFERV section 3.4) inside the attention patches.

The attention patches are installed once on a MODEL; what they record or replace in a given run is
decided by a `PreservationControl` placed in the run's ``model_options["transformer_options"]`` under
`CONTROL_KEY` (on a clone of the patched MODEL, so one patched MODEL serves inversion and editing).
ComfyUI hands that dict to every attention patch as ``extra_options``.

Features (per UNet self-/cross-attention block and per step):

- `Feature.SELF_QK`: the self-attention block's projected (q, k), [F, N, heads*d] each. They are both
  F_app = SWCFA (Q, K) and F_motion = TTA (Q, K): by the paper's equations 6 and 8 both attentions
  take the same W_Q / W_K projections of the block input (see ``tta.py``), so they are recorded once.
  They are *injected* separately: into SWCFA at `Injection.swcfa_steps`, into TTA at
  `Injection.tta_steps`.
- `Feature.CROSS_MAPS`: cross-attention maps softmax(q k^T / sqrt(d)) of attn2 per head,
  [F, heads, N, context tokens]: F_sem.

Values are never replaced: only q, k and the maps are.

Chunks and roles. The patch batch is made of chunks of F frames (`functional`). Each chunk has a role
name: the tuple ``extra_options[ROLES_KEY]`` if the caller set one for this call (a sampler that builds
its own batch), otherwise ``cond_roles[cond_or_uncond[c]]`` (ComfyUI's cond/uncond batching). The
control then

- records the features of the one chunk whose role is `capture` into a `FeatureStore` ("store" mode:
  inversion), and
- overrides the chunks whose role has an `Injection`, taking the source features either from the store
  (``source=None``) or from the chunk of this same batch that has the role ``source`` ("recompute"
  mode: the source chunk, the inverted latent of this step with the source prompt, runs next to the
  edit chunks and its q/k/maps are copied into them in the same call; nothing is stored).

Context windows. Under ComfyUI's context windows (``windows/frames.py``) each call's chunks hold one
window of the clip's frames. The features of a window are keyed by the window too: overlapping windows
hold different features for the frames they share (the attention mixes each window's own frames), so
one never overwrites another, and the sampler's call on a window reads what the inversion recorded on
that same window at that step. That needs the same windows at every step of both runs (a static
schedule); the recompute mode has no such need: its source chunk is always this call's window.

Steps. Every feature is keyed by the step index of the run's schedule: the control maps the call's
sigma to the index of the equal entry of its `sigmas`; call order never matters. A sigma that is not in
the schedule is an error. An inversion that evaluates other sigmas than the sampler passes, as its
`sigmas`, the sigma it evaluates for each sampling step s at index s. The call's sigma is the one the
run's `SigmaClock` was told by the sampler's loop before its model calls (a host float: reading the
call's ``extra_options["sigmas"]``, a device tensor, would make the host wait for the device inside
every UNet call); without a clock, or before it is told, it is read from ``extra_options["sigmas"]``.

How the inversion and sampler nodes drive it: docs/architecture.md, "The preservation control".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..windows.frames import FrameWindow, call_frames, describe
from .feature_store import BlockKey, Feature, FeatureStore
from .functional import MapEdit

CONTROL_KEY = "diffferv_control"
"""transformer_options key of the run's PreservationControl."""
ROLES_KEY = "diffferv_chunk_roles"
"""transformer_options key of an explicit per-chunk role tuple for one model call (optional)."""


def chunk_count(extra_options: Mapping) -> int:
    """Chunks in a patch call's batch: one per explicit role if the caller set ``ROLES_KEY`` (a sampler
    that appended its own chunks), else one per entry of ComfyUI's ``cond_or_uncond``."""
    explicit = extra_options.get(ROLES_KEY)
    return len(explicit) if explicit is not None else len(extra_options["cond_or_uncond"])


def block_key(extra_options: Mapping) -> BlockKey:
    """The BlockKey of the attention call described by a patch's extra_options."""
    name, number = extra_options["block"]
    return (name, int(number), int(extra_options.get("block_index", 0)))


def chunk_rows(x: torch.Tensor, chunk: int, frames: int) -> torch.Tensor:
    """Rows of one chunk (its F frames) of a chunked batch.

    Args:
        x: a chunked batch: row c*F + f is frame f of chunk c.
        chunk: the chunk's index c, 0-based.
        frames: the frame count F of each chunk.
    Returns:
        A view of x's rows c*F .. c*F + F - 1 (writes to it change x).
    Shape:
        - x: (K*F, ...), K chunks, F frames per chunk, any trailing dimensions.
        - Returns: (F, ...)
    """
    return x[chunk * frames : (chunk + 1) * frames]


@dataclass(frozen=True)
class Injection:
    """What the chunks of one role take from the source.

    source: None (the FeatureStore) or the role of another chunk in the same batch.
    swcfa_steps / tta_steps / cross_steps: the steps at which SWCFA's (q, k), TTA's (q, k) and the
    cross-attention maps are replaced; None means every step, an empty set never.
    token_map: LongTensor [context tokens of this chunk's prompt]: for each token j, the source token
    whose map column replaces column j, or -1 to keep the chunk's own column (prompt-to-prompt: shared
    tokens take the source maps, new tokens keep theirs). None: maps are never replaced.
    """

    source: str | None = None
    swcfa_steps: Collection[int] | None = None
    tta_steps: Collection[int] | None = None
    cross_steps: Collection[int] | None = None
    token_map: torch.Tensor | None = None


class SigmaClock:
    """The sigma the coming model calls of a run evaluate, told by the sampler's loop (``tell``, a host
    float) before them; shared by the run's controls."""

    def __init__(self):
        self.sigma: float | None = None

    def tell(self, sigma: float) -> None:
        self.sigma = sigma


def _at(steps: Collection[int] | None, step: int) -> bool:
    return steps is None or step in steps


@dataclass(frozen=True)
class CallPlan:
    """What the control does in one model call: the step, the context window its chunks hold (None: the
    whole clip), the chunk recorded (or None), and for each injected chunk its Injection and source chunk
    (None: from the store)."""

    step: int
    window: FrameWindow | None
    roles: tuple[str | None, ...]
    capture: int | None
    injections: tuple[tuple[int, Injection, int | None], ...]


class PreservationControl:
    """Per-run capture/override state; see the module docstring.

    sigmas: the run's schedule, step s <-> sigmas[s] (any order).
    cond_roles: role of each ComfyUI cond index when no explicit roles are given (default cond/uncond).
    capture: the role whose chunk is recorded into `store` (None: nothing recorded).
    capture_features: which features are recorded.
    injections: role -> Injection.
    clock: the run's SigmaClock (None: each call's sigma is read from the device).

    A deep copy returns the object itself: ComfyUI deep-copies model_options when cloning a model, and
    every copy must keep writing to this run's store.
    """

    def __init__(
        self,
        sigmas: torch.Tensor | Sequence[float],
        *,
        cond_roles: Mapping[int, str] | None = None,
        capture: str | None = None,
        capture_features: Collection[Feature] = (Feature.SELF_QK, Feature.CROSS_MAPS),
        store: FeatureStore | None = None,
        injections: Mapping[str, Injection] | None = None,
        clock: SigmaClock | None = None,
    ):
        self.sigmas = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu().reshape(-1)
        self.clock = clock
        self.cond_roles = dict({0: "cond", 1: "uncond"} if cond_roles is None else cond_roles)
        self.capture = capture
        self.capture_features = frozenset(Feature(f) for f in capture_features)
        self.store = store
        self.injections = dict(injections or {})
        uses_cache = any(inj.source is None for inj in self.injections.values())
        if (capture is not None or uses_cache) and store is None:
            raise ValueError("PreservationControl: capture or injection from the cache needs a FeatureStore")
        if capture is not None and capture in self.injections:
            raise ValueError(f"PreservationControl: role {capture!r} cannot be both recorded and injected")
        for role, inj in self.injections.items():
            if inj.source == role:
                raise ValueError(f"PreservationControl: role {role!r} cannot take features from itself")
            if inj.source in self.injections:
                raise ValueError(
                    f"PreservationControl: role {role!r} takes features from {inj.source!r}, which is itself "
                    "injected; sources must be chunks whose features are their own"
                )
            if inj.token_map is not None and inj.token_map.ndim != 1:
                raise ValueError(f"PreservationControl: the token map of role {role!r} must be 1-D")
        self._token_maps: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor, int]] = {}
        self._memo: tuple | None = None

    def __deepcopy__(self, memo) -> PreservationControl:
        return self

    def step_of(self, sigma: float) -> int:
        """Index of `sigma` in the schedule (relative tolerance 1e-4)."""
        close = torch.isclose(self.sigmas, torch.tensor(sigma, dtype=torch.float64), rtol=1e-4, atol=1e-8)
        hits = torch.nonzero(close).flatten()
        if hits.numel() == 0:
            raise ValueError(
                f"sigma {sigma:.6g} is not a step of this run's schedule ({self.sigmas.numel()} steps, "
                f"sigma {self.sigmas.min().item():.4g}..{self.sigmas.max().item():.4g}): the preservation "
                "control must be built with the sigmas the sampler evaluates"
            )
        return int(hits[0])

    def step_now(self, sigmas: torch.Tensor) -> int:
        """The step of a model call: the clock's sigma when it was told (no device read), else read from
        `sigmas` (the host waits for the device).

        Args:
            sigmas: the call's sigma for each row of its batch (one value), on any device.
        Returns:
            the index of the call's sigma in the run's schedule.
        Shape:
            - sigmas: (B,), B rows of the UNet batch.
        """
        if self.clock is not None and self.clock.sigma is not None:
            return self.step_of(self.clock.sigma)
        low, high = float(sigmas.min()), float(sigmas.max())
        if not torch.isclose(torch.tensor(low), torch.tensor(high), rtol=1e-4, atol=1e-8):
            raise ValueError(f"one model call mixes sigmas {low:.6g}..{high:.6g}; the control needs one step")
        return self.step_of(high)

    def roles(self, extra_options: Mapping) -> tuple[str | None, ...]:
        """The role of each chunk of this call (None for a chunk without one)."""
        explicit = extra_options.get(ROLES_KEY)
        if explicit is not None:
            return tuple(explicit)
        return tuple(self.cond_roles.get(int(c)) for c in extra_options["cond_or_uncond"])

    def plan(self, extra_options: Mapping) -> CallPlan | None:
        """The CallPlan of the model call `extra_options` belongs to (None when it records and injects
        nothing). Computed once per call: the 32 patch calls of one UNet pass share it."""
        sigmas = extra_options["sigmas"]
        told = self.clock.sigma if self.clock is not None else None
        roles = self.roles(extra_options)
        window = call_frames(extra_options)
        memo = self._memo
        if memo is not None and memo[0] is sigmas and memo[1] == told and memo[2:4] == (roles, window):
            return memo[4]
        capture = [c for c, role in enumerate(roles) if role is not None and role == self.capture]
        if len(capture) > 1:
            raise ValueError(
                f"more than one batch chunk has the recorded role {self.capture!r} (roles: {roles})"
            )
        injections = []
        for chunk, role in enumerate(roles):
            inj = self.injections.get(role) if role is not None else None
            if inj is None:
                continue
            source = None
            if inj.source is not None:
                sources = [c for c, r in enumerate(roles) if r == inj.source]
                if len(sources) != 1:
                    raise ValueError(
                        f"role {role!r} takes its features from the chunk with role {inj.source!r}, but this "
                        f"batch has {len(sources)} such chunks (roles: {roles})"
                    )
                source = sources[0]
            injections.append((chunk, inj, source))
        plan = None
        if capture or injections:
            step = self.step_now(sigmas)
            plan = CallPlan(step, window, roles, capture[0] if capture else None, tuple(injections))
        self._memo = (sigmas, told, roles, window, plan)
        return plan

    def _sources(
        self,
        plan: CallPlan,
        injected: Sequence[tuple[int, Injection, int | None]],
        block: BlockKey,
        feature: Feature,
        batch: Sequence[torch.Tensor],
        frames: int,
        shapes: Sequence[tuple[int, ...]],
        dtype: torch.dtype | None,
    ) -> dict[int | None, tuple[torch.Tensor, ...]]:
        """The source features of the injected chunks, once per source: the rows of a source chunk of
        `batch` (views), or (key None) the store's entry moved to the batch's device (in `dtype`; None: as
        stored) once for the block, however many chunks take it. `shapes`: the shape of one frame of each
        feature tensor in this call (cross-attention maps may have another token count than the injected
        chunk: only their leading dimensions must match)."""
        out: dict[int | None, tuple[torch.Tensor, ...]] = {}
        for _, _, source in injected:
            if source in out:
                continue
            if source is not None:
                out[source] = tuple(chunk_rows(x, source, frames) for x in batch)
                continue
            cached = self.store.get(plan.step, block, feature, plan.window)
            for have, shape in zip(cached, shapes, strict=True):
                need = (frames, *shape)
                fits = have.shape == need if feature is Feature.SELF_QK else have.shape[:-1] == need[:-1]
                if not fits:
                    raise ValueError(
                        f"cached {feature.value} at block {block} ({describe(plan.window)}) has shape "
                        f"{list(have.shape)}, the run needs "
                        f"{list(need)}: the cache comes from another clip size, resolution or model"
                    )
            device = batch[0].device
            out[None] = tuple(t.to(device=device, dtype=dtype or t.dtype, non_blocking=True) for t in cached)
        return out

    def self_attention(
        self, plan: CallPlan, block: BlockKey, q: torch.Tensor, k: torch.Tensor, frames: int
    ) -> QKStages:
        """Record SELF_QK and say which (q, k) SWCFA and TTA take.

        The recorded chunk's (q, k) go to the store when SELF_QK is captured; the injected chunks' source
        (q, k), from the store (moved to q's device and dtype) or from a source chunk of this batch, are
        checked against q's shape and handed to a `QKStages`, which later overwrites q and k in place.

        Args:
            plan: this model call's CallPlan.
            block: the self-attention block.
            q: the block's projected queries as the patch got them, heads not split.
            k: the block's projected keys as the patch got them, heads not split.
            frames: the frame count F of each chunk.
        Returns:
            The QKStages that give SWCFA's and then TTA's (q, k) (q and k themselves, rows overwritten).
        Shape:
            - q: (K*F, N, C), K chunks, F frames per chunk, N tokens per frame, C channels (heads * head
              dim).
            - k: (K*F, N, C)
        """
        if plan.capture is not None and Feature.SELF_QK in self.capture_features:
            self.store.put(
                plan.step,
                block,
                Feature.SELF_QK,
                *(chunk_rows(x, plan.capture, frames) for x in (q, k)),
                window=plan.window,
            )
        injected = [
            (chunk, inj, source)
            for chunk, inj, source in plan.injections
            if _at(inj.swcfa_steps, plan.step) or _at(inj.tta_steps, plan.step)
        ]
        shapes = (tuple(q.shape[1:]), tuple(k.shape[1:]))
        sources = self._sources(plan, injected, block, Feature.SELF_QK, (q, k), frames, shapes, q.dtype)
        swcfa = {c: sources[s] for c, inj, s in injected if _at(inj.swcfa_steps, plan.step)}
        tta = {c: sources[s] for c, inj, s in injected if _at(inj.tta_steps, plan.step)}
        return QKStages(q, k, frames, swcfa, tta)

    def wants_cross_maps(self, plan: CallPlan) -> bool:
        """Whether this call needs explicit cross-attention maps (recorded or injected)."""
        if plan.capture is not None and Feature.CROSS_MAPS in self.capture_features:
            return True
        return self.injects_cross_maps(plan)

    def injects_cross_maps(self, plan: CallPlan) -> bool:
        """Whether this call replaces cross-attention map columns of some chunk."""
        return any(
            inj.token_map is not None and _at(inj.cross_steps, plan.step) for _, inj, _ in plan.injections
        )

    def _token_map(self, inj: Injection, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(gather index, keep-own mask, largest source token) of an injection's token map on `device`,
        made once per device (no host-device traffic in the UNet call after the first)."""
        key = (id(inj), device)
        if key not in self._token_maps:
            token_map = inj.token_map.cpu()
            self._token_maps[key] = (
                token_map.clamp(min=0).to(device),
                (token_map >= 0).to(device),
                int(token_map.max()),
            )
        return self._token_maps[key]

    def cross_maps(
        self, plan: CallPlan, block: BlockKey, frames: int, tokens: int, dtype: torch.dtype
    ) -> MapEdit:
        """The map edit of one cross-attention call (``functional.attention_with_maps``): records CROSS_MAPS
        of the recorded chunk (in `dtype`, the UNet's, unless the store has its own) and, in the injected
        chunks, replaces the columns of tokens the token map links to the source's, in place (no
        renormalisation, as in prompt-to-prompt). tokens: the query tokens N of the block."""
        record = plan.capture is not None and Feature.CROSS_MAPS in self.capture_features
        injected = [
            (chunk, inj, source)
            for chunk, inj, source in plan.injections
            if inj.token_map is not None and _at(inj.cross_steps, plan.step)
        ]
        cached = [item for item in injected if item[2] is None]
        sources: dict[int | None, tuple[torch.Tensor, ...]] = {}

        def edit(maps: torch.Tensor, where: slice) -> torch.Tensor:
            if record:
                part = chunk_rows(maps, plan.capture, frames).to(dtype)
                self.store.put_part(plan.step, block, Feature.CROSS_MAPS, part, where, tokens, plan.window)
            if cached and not sources:  # the store's maps of the whole block, moved to the device once
                shape = (maps.shape[1], tokens, maps.shape[3])
                sources.update(
                    self._sources(plan, cached, block, Feature.CROSS_MAPS, (maps,), frames, (shape,), None)
                )
            for chunk, inj, source in injected:
                # the store's maps of this slice, or the source chunk's
                src = sources[None][0][:, :, where] if source is None else chunk_rows(maps, source, frames)
                index, keep, largest = self._token_map(inj, maps.device)
                if index.numel() != maps.shape[-1] or largest >= src.shape[-1]:
                    raise ValueError(
                        f"token map of length {index.numel()} (max {largest}) does not fit "
                        f"{maps.shape[-1]} edit tokens and {src.shape[-1]} source tokens"
                    )
                own = chunk_rows(maps, chunk, frames)
                own.copy_(torch.where(keep, src.index_select(-1, index).to(own.dtype), own))
            return maps

        return edit


class QKStages:
    """The (q, k) SWCFA takes, then the (q, k) TTA takes, made by overwriting the injected chunks' rows of
    the patch's own q and k (ComfyUI hands a replacement freshly projected q and k that nothing reads
    after it): no copy of q and k when both attentions take the same chunks from the same sources (every
    appearance step) or only one of them injects; the rows SWCFA replaced but TTA keeps are saved and put
    back between the stages. Call `swcfa` first, then `tta`.

    swcfa / tta: chunk -> its source (q, k) rows [F, N, C]."""

    def __init__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        frames: int,
        swcfa: Mapping[int, tuple[torch.Tensor, ...]],
        tta: Mapping[int, tuple[torch.Tensor, ...]],
    ):
        self.q, self.k, self.frames = q, k, frames
        self._swcfa, self._tta = swcfa, tta
        self._saved: dict[int, tuple[torch.Tensor, ...]] = {}

    def _write(self, chunk: int, rows: tuple[torch.Tensor, ...]) -> None:
        for x, src in zip((self.q, self.k), rows, strict=True):
            chunk_rows(x, chunk, self.frames).copy_(src)

    def swcfa(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (q, k) SWCFA takes: the injected chunks' rows overwritten with their SWCFA sources.

        Rows that TTA does not take from the same source are saved first, so that `tta` can put them back.
        Call it once, before `tta`.

        Returns:
            (q, k): the patch's own tensors, modified in place.
        Shape:
            - Returns: ((K*F, N, C), (K*F, N, C)), K chunks, F frames per chunk, N tokens per frame,
              C channels (heads * head dim).
        """
        for chunk, rows in self._swcfa.items():
            if self._tta.get(chunk) is not rows:
                self._saved[chunk] = tuple(
                    chunk_rows(x, chunk, self.frames).clone() for x in (self.q, self.k)
                )
            self._write(chunk, rows)
        return self.q, self.k

    def tta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (q, k) TTA takes: the rows saved by `swcfa` put back, then the injected chunks' rows
        overwritten with their TTA sources (unless SWCFA already wrote the same ones). Call it after `swcfa`.

        Returns:
            (q, k): the patch's own tensors, modified in place.
        Shape:
            - Returns: ((K*F, N, C), (K*F, N, C)), K chunks, F frames per chunk, N tokens per frame,
              C channels (heads * head dim).
        """
        for chunk, rows in self._saved.items():
            self._write(chunk, rows)
        for chunk, rows in self._tta.items():
            if self._swcfa.get(chunk) is not rows:
                self._write(chunk, rows)
        return self.q, self.k
