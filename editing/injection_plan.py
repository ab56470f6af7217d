"""What the Preservation Inject Sampler injects and how (DiffFERV section 3.4), decided without ComfyUI:
which chunks of the sampler's batch take which source features at which steps (`Injection`s by role),
how the source features reach them (the identity model's `source_path`: from the inversion's store, the
source chunk in the same batch, or the source chunk run first), what the source path records, and the
kinds of UNet call the run may make (for ComfyUI's memory estimate). The nodes' glue turns the plan into
controls and wrappers on a MODEL.

Roles (`ChunkRole`): ComfyUI batches the edit prompt as cond (EDIT) and the negative as uncond
(NEGATIVE); the inversion's chunk and the recompute mode's source chunk are SOURCE.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

import torch

from ..attention.control import Injection
from ..attention.feature_store import Feature
from ..attention.memory import UNetCall
from .identity import FROM_STORE, IN_BATCH
from .preservation import appearance_steps
from .token_alignment import align_tokens


class ChunkRole(str, Enum):
    """The role of a chunk of the batch: what its F rows are (the attention control keys on it)."""

    EDIT = "edit"  # the edit prompt: ComfyUI's cond
    NEGATIVE = "negative"  # the negative prompt (default: the source prompt): ComfyUI's uncond
    SOURCE = "source"  # the inverted latent with the source prompt: the inversion, the recompute mode's chunk


ROLE_OF_COND = {0: ChunkRole.EDIT, 1: ChunkRole.NEGATIVE}
"""The role of each of ComfyUI's chunks (cond_or_uncond 0: the edit prompt, 1: the negative)."""
SOURCE_ROLE = ChunkRole.SOURCE
NEVER: frozenset[int] = frozenset()


@dataclass(frozen=True)
class InjectionPlan:
    """`roles`: each of ComfyUI's chunk roles -> its `Injection`, taking the source features from the store
    (empty: nothing is injected, a plain DDIM sampling); `path`: how they reach the edit
    (``identity.source_path``); `in_batch_roles`: the same injections taking the source chunk of the same
    batch (the recompute mode's `IN_BATCH` path; None otherwise); `features`: what the source path records
    when it runs alone first; `calls`: every kind of UNet call the run may make, the largest and the one a
    split comes down to included."""

    roles: dict[str, Injection]
    path: str
    in_batch_roles: dict[str, Injection] | None
    features: tuple[Feature, ...]
    calls: tuple[UNetCall, ...]


def plan_injection(
    timesteps: torch.Tensor,
    tau_app: float,
    inject_motion: bool,
    inject_semantic: bool,
    source_tokens: list[int],
    edit_tokens: list[int],
    negative_tokens: list[int],
    path: str,
    held_per_frame: int,
) -> InjectionPlan:
    """The plan of a sampling run: what each chunk role injects at which steps, and how.

    Appearance (SWCFA's q, k) is injected at the steps `tau_app` selects (``preservation.appearance_steps``),
    motion (TTA's q, k) at every step when `inject_motion`, semantics (cross-attention maps, mapped from the
    source prompt's tokens to each prompt's) at every step when `inject_semantic`. With none of the three
    the plan has no roles (a plain DDIM sampling).

    Args:
        timesteps: the model timestep (SD1.5: 0..999) of each sigma of the inversion's schedule, low ->
            high; the plan's step indices are positions in it.
        tau_app: share of the timestep range, from the noisy end, whose steps take appearance (1: every
            step, 0: none).
        inject_motion: inject TTA's (q, k) at every step.
        inject_semantic: inject the cross-attention maps at every step.
        source_tokens: the source prompt's token ids (one padded CLIP chunk, ``token_alignment.token_id``).
        edit_tokens: the edit prompt's token ids, likewise.
        negative_tokens: the negative prompt's token ids, likewise.
        path: how the source features reach the edit (``identity.source_path``: FROM_STORE, IN_BATCH or
            SEPARATE).
        held_per_frame: bytes per frame of the one-step store the source path keeps on the device when it
            runs alone (``preservation.store_bytes(1, 0, ...)``).
    Returns:
        the InjectionPlan: roles, path, in-batch roles, recorded features and UNet call kinds.
    Shape:
        - timesteps: (S,), S entries of the schedule (T + 1 for T steps).
    """
    appearance = appearance_steps(timesteps, tau_app)
    plain = (UNetCall(chunks=2), UNetCall(chunks=1))
    if not (appearance or inject_motion or inject_semantic):
        return InjectionPlan({}, path, None, (), plain)

    def injection(tokens: list[int]) -> Injection:
        return Injection(
            source=None,
            swcfa_steps=appearance,
            tta_steps=None if inject_motion else NEVER,
            cross_steps=None if inject_semantic else NEVER,
            token_map=align_tokens(source_tokens, tokens) if inject_semantic else None,
        )

    roles = {ROLE_OF_COND[0]: injection(edit_tokens), ROLE_OF_COND[1]: injection(negative_tokens)}
    if path == FROM_STORE:
        calls = tuple(UNetCall(chunks=n, cached_source=True) for n in (2, 1))
        return InjectionPlan(roles, path, None, (), calls)
    features: list[Feature] = [Feature.SELF_QK] if appearance or inject_motion else []
    features += [Feature.CROSS_MAPS] if inject_semantic else []
    calls = tuple(UNetCall(chunks=n, held_per_frame=held_per_frame) for n in (2, 1))
    in_batch_roles = None
    if path == IN_BATCH:
        in_batch_roles = {role: replace(each, source=SOURCE_ROLE) for role, each in roles.items()}
        calls = (UNetCall(chunks=3), *calls)
    return InjectionPlan(roles, path, in_batch_roles, tuple(features), calls)
