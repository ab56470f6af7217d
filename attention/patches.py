"""The attention replacements ComfyUI calls as attn1/attn2 patches (pure torch: ComfyUI passes plain
tensors and an ``extra_options`` dict; the ComfyUI glue that installs them lives in
``nodes/attention_patches.py``).

Both follow ComfyUI's replace-patch contract ``patch(q, k, v, extra_options) -> out``: q, k, v are
projected and not split into heads, [chunks * F, tokens, heads*d]; out has q's shape and ComfyUI applies
``to_out`` to it. They read from extra_options: ``cond_or_uncond`` or ``ROLES_KEY`` (chunk count, see
`control.chunk_count`), ``n_heads``,
``activations_shape`` ([B, C, H, W] of the block: the latent grid, never assumed square), ``block`` and
``block_index``, ``attn_precision``, the run's `PreservationControl` under `CONTROL_KEY` if any, and
ComfyUI's current context window (``windows.frames.call_frames``) if the model samples in windows.

Context windows. Under ComfyUI's context windows a call's batch holds, per chunk, the frames of one
window of the clip (in the window's order) instead of the whole clip. SWCFA then slides over the
window's frames as they come in the batch, and TTA attends along the clip's trajectories restricted to
the window's frames (``TrajectoryGrid.restrict``); a window holding the whole clip in order is the
unwindowed case, exactly.

Patch objects are immutable after construction (their memo of device copies aside) and return
themselves from deepcopy: ComfyUI deep-copies model_options on every clone, and the trajectories they
hold should not be copied each time. Each class carries a ``diffferv_patch`` marker ("attn1"/"attn2"):
the glue recognises its own patches by it, not by class identity, because the pack can be imported
under more than one module name (ComfyUI derives one from the folder, the tests use another).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import ClassVar

import torch

from ..flow.trajectory_set import TrajectorySet
from ..windows.frames import FrameWindow, call_frames, describe, is_whole_clip
from .control import CONTROL_KEY, block_key, chunk_count
from .functional import AttentionFn, attention_with_maps, frames_per_chunk, sdpa_attention
from .memory import WORK_BYTES
from .swcfa import check_window, sliding_window_attention
from .tta import TrajectoryGroups, trajectory_attention

ReplacePatch = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Mapping], torch.Tensor]
GROUPS_KEPT = 64
"""Trajectory groups a patch keeps built at least (per grid, device and window; least recently used
dropped): a static window schedule needs one per window and grid (`keep_groups` raises it for a run with
more), a shifting one (uniform schedules) more."""


def _attention_kwargs(extra_options: Mapping) -> dict:
    """What ComfyUI's own attention call passes besides q, k, v, heads."""
    return {"attn_precision": extra_options.get("attn_precision"), "transformer_options": extra_options}


class TemporalSelfAttention:
    """attn1 replacement: SWCFA, then TTA on its output, as one self-attention (see ``tta.py`` for what
    Q, K, V of each are).

    out = TTA(q_tta, k_tta, SWCFA(q_swcfa, k_swcfa, v))

    where (q_swcfa, k_swcfa) and (q_tta, k_tta) are the block's q and k, or the source's where the run's
    PreservationControl injects them; v is never replaced. With `swcfa` off the first stage is plain
    per-frame self-attention; with `tta` off the second stage is skipped.
    """

    diffferv_patch: ClassVar[str] = "attn1"

    def __init__(
        self,
        *,
        window: int = 3,
        swcfa: bool = True,
        tta: bool = True,
        trajectories: TrajectorySet | None = None,
        attention_fn: AttentionFn = sdpa_attention,
        max_bytes: int = WORK_BYTES,
    ):
        if tta and trajectories is None:
            raise ValueError("trajectory attention (TTA) needs TRAJECTORIES")
        check_window(window)
        self.window = window
        self.swcfa = swcfa
        self.tta = tta
        self.trajectories = trajectories
        self.attention_fn = attention_fn
        self.max_bytes = max_bytes
        self._groups: OrderedDict[tuple, TrajectoryGroups] = OrderedDict()
        self.groups_kept = GROUPS_KEPT

    def keep_groups(self, count: int) -> None:
        """Keep at least `count` trajectory groups built (a run's windows x the grids it attends at), so
        a step over many windows does not rebuild them every time; each holds the cell indices of one
        window at one grid (about 0.5 MiB for 16 frames at 64x64 cells) on the UNet's device."""
        self.groups_kept = max(self.groups_kept, count)

    def __deepcopy__(self, memo) -> TemporalSelfAttention:
        return self

    def groups(
        self, height: int, width: int, device: torch.device, window: FrameWindow | None = None
    ) -> TrajectoryGroups:
        """The trajectory groups of a height x width grid on `device`, restricted to the clip frames of
        `window` (None: the whole clip); validated and built once, the last `groups_kept` kept."""
        if is_whole_clip(window, self.trajectories.frames):
            window = None
        key = (height, width, device, window)
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        grid = self.trajectories.grid(height, width)
        groups = TrajectoryGroups.from_grid(grid if window is None else grid.restrict(window)).to(device)
        self._groups[key] = groups
        if len(self._groups) > self.groups_kept:
            self._groups.popitem(last=False)
        return groups

    def check_frames(self, frames: int, window: FrameWindow | None) -> None:
        """The batch's frames per chunk must be the clip the TRAJECTORIES hold, or the current context
        window of it."""
        clip = self.trajectories.frames
        if window is None:
            if clip != frames:
                raise ValueError(
                    f"TRAJECTORIES hold {clip} frames but the latent batch has {frames} frames per chunk: "
                    "compute the trajectories from the same frames as the latent"
                )
            return
        if len(window) != frames:
            raise ValueError(
                f"the context window ({describe(window)}) lists {len(window)} frames but the attention batch "
                f"holds {frames} per chunk: the batch must be the window's frames"
            )
        if min(window) < 0 or max(window) >= clip:
            raise ValueError(
                f"the context window ({describe(window)}) reaches outside the {clip} frames the TRAJECTORIES "
                "hold: compute the trajectories from the whole clip that is sampled"
            )

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Mapping
    ) -> torch.Tensor:
        """The attn1 replacement: SWCFA (or plain per-frame attention), then TTA on its output.

        The run's PreservationControl, if any, records this block's (q, k) and overwrites the injected
        chunks' rows of q and k in place (see ``control.QKStages``). TTA writes its result over the SWCFA
        output, so the stages hold one output tensor.

        Args:
            q: the block's projected queries, heads not split.
            k: the block's projected keys, heads not split.
            v: the block's projected values, heads not split.
            extra_options: ComfyUI's patch options (see the module docstring for the keys read).
        Returns:
            The attention output, heads merged, before ``to_out``.
        Shape:
            - q: (K*F, N, H*D), K chunks, F frames per chunk, N = h*w tokens per frame on the h x w latent
              grid, H heads, D head dim.
            - k: (K*F, N, H*D)
            - v: (K*F, N, H*D)
            - Returns: (K*F, N, H*D)
        """
        chunks = chunk_count(extra_options)
        frames = frames_per_chunk(q.shape[0], chunks)
        heads = extra_options["n_heads"]
        kwargs = _attention_kwargs(extra_options)
        control = extra_options.get(CONTROL_KEY)
        plan = control.plan(extra_options) if control is not None else None
        stages = (
            None if plan is None else control.self_attention(plan, block_key(extra_options), q, k, frames)
        )

        q_swcfa, k_swcfa = (q, k) if stages is None else stages.swcfa()
        if self.swcfa:
            out = sliding_window_attention(
                q_swcfa, k_swcfa, v, chunks, self.window, heads, self.attention_fn, self.max_bytes, **kwargs
            )
        else:
            out = self.attention_fn(q_swcfa, k_swcfa, v, heads, **kwargs)
        if self.tta:
            window = call_frames(extra_options)
            self.check_frames(frames, window)
            height, width = extra_options["activations_shape"][-2:]
            groups = self.groups(int(height), int(width), q.device, window)
            q_tta, k_tta = (q, k) if stages is None else stages.tta()
            out = trajectory_attention(
                q_tta, k_tta, out, groups, chunks, heads, self.attention_fn, self.max_bytes, out=out, **kwargs
            )
        return out


class CrossAttentionControl:
    """attn2 replacement that lets the run's PreservationControl record and replace cross-attention maps.

    Without a control asking for maps at this call it is the plain attention (or `previous`, the attn2
    replacement another node had installed on this block, which keeps working). When maps are needed it
    computes them explicitly, a slice of query tokens at a time (``functional.attention_with_maps``,
    memory bounded by `max_bytes`), hands each slice to the control, and returns maps @ v. If the control
    only records, the output is `previous`'s (when there is one); if it replaces maps, `previous` is
    bypassed for that call.
    """

    diffferv_patch: ClassVar[str] = "attn2"

    def __init__(
        self,
        attention_fn: AttentionFn = sdpa_attention,
        previous: ReplacePatch | None = None,
        max_bytes: int = WORK_BYTES,
    ):
        self.attention_fn = attention_fn
        self.previous = previous
        self.max_bytes = max_bytes

    def __deepcopy__(self, memo) -> CrossAttentionControl:
        return self

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Mapping
    ) -> torch.Tensor:
        """The attn2 replacement: plain cross-attention (or `previous`'s), or the attention with explicit
        maps when the run's PreservationControl records or replaces them at this call.

        Args:
            q: the block's projected queries, heads not split.
            k: the projected keys of the prompt (context), heads not split.
            v: the projected values of the prompt (context), heads not split.
            extra_options: ComfyUI's patch options (see the module docstring for the keys read).
        Returns:
            The attention output, heads merged, before ``to_out``.
        Shape:
            - q: (K*F, N, H*D), K chunks, F frames per chunk, N tokens per frame, H heads, D head dim.
            - k: (K*F, T, H*D), T context (prompt) tokens.
            - v: (K*F, T, H*D)
            - Returns: (K*F, N, H*D)
        """
        control = extra_options.get(CONTROL_KEY)
        plan = control.plan(extra_options) if control is not None else None
        if plan is None or not control.wants_cross_maps(plan):
            return self._plain(q, k, v, extra_options)
        frames = frames_per_chunk(q.shape[0], chunk_count(extra_options))
        edit = control.cross_maps(plan, block_key(extra_options), frames, q.shape[1], q.dtype)
        out = attention_with_maps(q, k, v, extra_options["n_heads"], edit, self.max_bytes)
        if self.previous is not None and not control.injects_cross_maps(plan):
            return self.previous(q, k, v, extra_options)
        return out

    def _plain(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Mapping
    ) -> torch.Tensor:
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        return self.attention_fn(q, k, v, extra_options["n_heads"], **_attention_kwargs(extra_options))
