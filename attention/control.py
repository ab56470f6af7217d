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
  (``source="cache"``) or from the chunk of this same batch that has the role ``source`` ("recompute"
  mode: the source chunk, the inverted latent of this step with the source prompt, runs next to the
  edit chunks and its q/k/maps are copied into them in the same call; nothing is stored).

Context windows. Under ComfyUI's context windows (``windows/frames.py``) each call's chunks hold one
window of the clip's frames. The features of a window are keyed by the window too: overlapping windows
hold different features for the frames they share (the attention mixes each window's own frames), so
one never overwrites another, and the sampler's call on a window reads what the inversion recorded on
that same window at that step. That needs the same windows at every step of both runs (a static
schedule); the recompute mode has no such need: its source chunk is always this call's window.

Steps. Every feature is keyed by the step index of the run's schedule: the control maps the call's
sigma (``extra_options["sigmas"]``) to the index of the equal entry of its `sigmas`; call order never
matters. A sigma that is not in the schedule is an error. An inversion that evaluates other sigmas
than the sampler passes, as its `sigmas`, the sigma it evaluates for each sampling step s at index s.

How the inversion and sampler nodes use it (``with_control`` is in ``nodes/attention_patches.py``)::

    # inversion, "store" mode (cfg 1: the batch is ComfyUI's cond chunk only)
    store = FeatureStore()  # CPU, fp16
    control = PreservationControl(sigmas, cond_roles={0: "source"}, capture="source", store=store)
    run_inversion(with_control(patched_model, control))

    # editing from the store: edit prompt = cond, source prompt = uncond (negative)
    edit = Injection(swcfa_steps=app_steps, tta_steps=None, cross_steps=None, token_map=edit_to_source)
    negative = Injection(swcfa_steps=app_steps, tta_steps=None, cross_steps=None, token_map=identity)
    control = PreservationControl(sigmas, store=store, injections={"cond": edit, "uncond": negative})

    # editing, "recompute" mode: per call the sampler (e.g. a model_function_wrapper) appends the source
    # chunk (this step's inverted latent, source prompt) to the batch and sets
    # c["transformer_options"][ROLES_KEY] = (*roles of ComfyUI's chunks, "source"), then drops its output
    control = PreservationControl(sigmas, injections={"cond": replace(edit, source="source"), ...})
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import torch

from ..windows.frames import FrameWindow, call_frames, describe

CONTROL_KEY = "diffferv_control"
"""transformer_options key of the run's PreservationControl."""
ROLES_KEY = "diffferv_chunk_roles"
"""transformer_options key of an explicit per-chunk role tuple for one model call (optional)."""
SOURCE_CACHE = "cache"
"""`Injection.source` value: take the source features from the FeatureStore."""

BlockKey = tuple[str, int, int]
"""(block name, block number, transformer index inside it), e.g. ("input", 1, 0)."""


class Feature(str, Enum):
    SELF_QK = "self_qk"
    CROSS_MAPS = "cross_maps"


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
    """Rows of one chunk (its F frames) of a chunked batch."""
    return x[chunk * frames : (chunk + 1) * frames]


class FeatureStore:
    """Recorded features keyed by (step, block, feature) and context window (None: the whole clip), kept
    on `device` in `dtype` (the paper's store: CPU, fp16; None: where and as they were computed). Memory
    per step and self-attention block: 2 * F * N * heads*d values for SELF_QK; per cross-attention block:
    F * heads * N * context tokens for CROSS_MAPS, with F the frames of the window (overlapping windows
    each keep their own)."""

    def __init__(self, dtype: torch.dtype | None = torch.float16, device: torch.device | str | None = "cpu"):
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
        self._items.setdefault(window, {})[(step, block, feature)] = tuple(
            t.detach().to(device=self.device or t.device, dtype=self.dtype or t.dtype, copy=True)
            for t in tensors
        )

    def clear(self) -> None:
        self._items.clear()

    def get(
        self, step: int, block: BlockKey, feature: Feature, window: FrameWindow | None = None
    ) -> tuple[torch.Tensor, ...]:
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


@dataclass(frozen=True)
class Injection:
    """What the chunks of one role take from the source.

    source: `SOURCE_CACHE` (the FeatureStore) or the role of another chunk in the same batch.
    swcfa_steps / tta_steps / cross_steps: the steps at which SWCFA's (q, k), TTA's (q, k) and the
    cross-attention maps are replaced; None means every step, an empty set never.
    token_map: LongTensor [context tokens of this chunk's prompt]: for each token j, the source token
    whose map column replaces column j, or -1 to keep the chunk's own column (prompt-to-prompt: shared
    tokens take the source maps, new tokens keep theirs). None: maps are never replaced.
    """

    source: str = SOURCE_CACHE
    swcfa_steps: Collection[int] | None = None
    tta_steps: Collection[int] | None = None
    cross_steps: Collection[int] | None = None
    token_map: torch.Tensor | None = None


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
    ):
        self.sigmas = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu().reshape(-1)
        self.cond_roles = dict({0: "cond", 1: "uncond"} if cond_roles is None else cond_roles)
        self.capture = capture
        self.capture_features = frozenset(Feature(f) for f in capture_features)
        self.store = store
        self.injections = dict(injections or {})
        uses_cache = any(inj.source == SOURCE_CACHE for inj in self.injections.values())
        if (capture is not None or uses_cache) and store is None:
            raise ValueError("PreservationControl: capture or injection from the cache needs a FeatureStore")
        if capture is not None and capture in self.injections:
            raise ValueError(f"PreservationControl: role {capture!r} cannot be both recorded and injected")
        for role, inj in self.injections.items():
            if inj.source == role:
                raise ValueError(f"PreservationControl: role {role!r} cannot take features from itself")
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
        roles = self.roles(extra_options)
        window = call_frames(extra_options)
        memo = self._memo
        if memo is not None and memo[0] is sigmas and memo[1] == roles and memo[2] == window:
            return memo[3]
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
            if inj.source != SOURCE_CACHE:
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
            low, high = float(sigmas.min()), float(sigmas.max())
            if not torch.isclose(torch.tensor(low), torch.tensor(high), rtol=1e-4, atol=1e-8):
                raise ValueError(
                    f"one model call mixes sigmas {low:.6g}..{high:.6g}; the control needs one step"
                )
            plan = CallPlan(
                self.step_of(high), window, roles, capture[0] if capture else None, tuple(injections)
            )
        self._memo = (sigmas, roles, window, plan)
        return plan

    def _source(
        self,
        plan: CallPlan,
        source: int | None,
        block: BlockKey,
        feature: Feature,
        batch: Sequence,
        frames: int,
    ) -> tuple[torch.Tensor, ...]:
        """The source features for one injected chunk: the rows of the source chunk in `batch`, or the
        store's entry moved to the batch's device and dtype (cross-attention maps may have another token
        count than the injected chunk: only their leading dimensions must match)."""
        if source is not None:
            return tuple(chunk_rows(x, source, frames) for x in batch)
        cached = self.store.get(plan.step, block, feature, plan.window)
        for have, want in zip(cached, batch, strict=True):
            need = (frames, *want.shape[1:])
            fits = have.shape == need if feature is Feature.SELF_QK else have.shape[:-1] == need[:-1]
            if not fits:
                raise ValueError(
                    f"cached {feature.value} at block {block} ({describe(plan.window)}) has shape "
                    f"{list(have.shape)}, the run needs "
                    f"{list(need)}: the cache comes from another clip size, resolution or model"
                )
        return tuple(
            t.to(device=b.device, dtype=b.dtype, non_blocking=True)
            for t, b in zip(cached, batch, strict=True)
        )

    def self_attention(
        self, plan: CallPlan, block: BlockKey, q: torch.Tensor, k: torch.Tensor, frames: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Record and override SELF_QK: returns (q, k) for SWCFA and (q, k) for TTA, [chunks*F, N, C]."""
        if plan.capture is not None and Feature.SELF_QK in self.capture_features:
            self.store.put(
                plan.step,
                block,
                Feature.SELF_QK,
                *(chunk_rows(x, plan.capture, frames) for x in (q, k)),
                window=plan.window,
            )
        swcfa, tta = [], []
        for chunk, inj, source in plan.injections:
            at_swcfa, at_tta = _at(inj.swcfa_steps, plan.step), _at(inj.tta_steps, plan.step)
            if not (at_swcfa or at_tta):
                continue
            pair = self._source(plan, source, block, Feature.SELF_QK, (q, k), frames)
            if at_swcfa:
                swcfa.append((chunk, pair))
            if at_tta:
                tta.append((chunk, pair))
        return (*_replace_rows((q, k), swcfa, frames), *_replace_rows((q, k), tta, frames))

    def wants_cross_maps(self, plan: CallPlan) -> bool:
        """Whether this call needs explicit cross-attention maps (recorded or injected)."""
        if plan.capture is not None and Feature.CROSS_MAPS in self.capture_features:
            return True
        return any(
            inj.token_map is not None and _at(inj.cross_steps, plan.step) for _, inj, _ in plan.injections
        )

    def cross_attention(
        self, plan: CallPlan, block: BlockKey, probs: torch.Tensor, frames: int
    ) -> torch.Tensor:
        """Record and override CROSS_MAPS. probs: [chunks*F, heads, N, tokens]. Returns `probs` itself when
        nothing was replaced, else a new tensor where each injected chunk's mapped columns come from its
        source (no renormalisation, as in prompt-to-prompt)."""
        if plan.capture is not None and Feature.CROSS_MAPS in self.capture_features:
            self.store.put(
                plan.step,
                block,
                Feature.CROSS_MAPS,
                chunk_rows(probs, plan.capture, frames),
                window=plan.window,
            )
        out = probs
        for chunk, inj, source in plan.injections:
            if inj.token_map is None or not _at(inj.cross_steps, plan.step):
                continue
            (src,) = self._source(plan, source, block, Feature.CROSS_MAPS, (probs,), frames)
            token_map = inj.token_map.to(probs.device)
            if (
                token_map.ndim != 1
                or token_map.numel() != probs.shape[-1]
                or int(token_map.max()) >= src.shape[-1]
            ):
                raise ValueError(
                    f"token map of length {token_map.numel()} (max {int(token_map.max())}) does not fit "
                    f"{probs.shape[-1]} edit tokens and {src.shape[-1]} source tokens"
                )
            own = chunk_rows(probs, chunk, frames)
            mixed = torch.where(token_map >= 0, src[..., token_map.clamp(min=0)], own)
            if out is probs:
                out = probs.clone()
            out[chunk * frames : (chunk + 1) * frames] = mixed
        return out


def _replace_rows(
    batch: tuple[torch.Tensor, ...], replacements: list[tuple[int, tuple[torch.Tensor, ...]]], frames: int
) -> tuple[torch.Tensor, ...]:
    """Copies of the batch tensors with the given chunks' rows replaced (the inputs when none are)."""
    if not replacements:
        return batch
    out = tuple(x.clone() for x in batch)
    for chunk, sources in replacements:
        for x, src in zip(out, sources, strict=True):
            x[chunk * frames : (chunk + 1) * frames] = src
    return out
