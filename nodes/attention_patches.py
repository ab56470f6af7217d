"""The one place where DiffFERV's attention patches meet ComfyUI's ModelPatcher.

`apply_temporal_attention` installs, on a clone of the MODEL, an attn1 replacement (SWCFA -> TTA,
``attention/patches.py``) on the SD1.5 self-attention blocks of the chosen resolutions and an attn2
replacement on all 16 cross-attention blocks, through ComfyUI's stock ``set_model_attn1_replace`` /
``set_model_attn2_replace``. Both use ComfyUI's own optimized attention, looked up at call time.

Other patches are left alone: weight patches (LoRA), ``patches`` hooks (attn1_patch, attn1_output_patch,
...), wrappers and other transformer_options keys compose as usual. ``set_model_attn{1,2}_replace``
overwrites silently whatever is registered under the same key, and a replacement registered with a
transformer index (key (name, number, 0)) takes precedence over one without it, so before installing:

- attn1: another node's replacement on a block we patch is an error (two replacements of the same
  self-attention cannot both run; the message says which block and what to do). Our own earlier
  replacement is replaced (applying the node twice keeps the last settings).
- attn2: another node's replacement (e.g. IP-Adapter) is wrapped, under the key it was registered
  with, and keeps running; only calls whose cross-attention maps are replaced bypass it.

`with_control` puts a run's PreservationControl on a clone (used by the inversion and sampler nodes).
"""

from __future__ import annotations

import comfy.ldm.modules.attention as comfy_attention_module

from ..attention.control import CONTROL_KEY, PreservationControl
from ..attention.patches import CrossAttentionControl, TemporalSelfAttention
from ..flow.trajectories import level_grid
from ..flow.trajectory_set import TrajectorySet

SD15_SELF_ATTENTION_LEVELS: dict[tuple[str, int], int] = {
    ("input", 1): 0,
    ("input", 2): 0,
    ("input", 4): 1,
    ("input", 5): 1,
    ("input", 7): 2,
    ("input", 8): 2,
    ("middle", 0): 3,
    ("output", 3): 2,
    ("output", 4): 2,
    ("output", 5): 2,
    ("output", 6): 1,
    ("output", 7): 1,
    ("output", 8): 1,
    ("output", 9): 0,
    ("output", 10): 0,
    ("output", 11): 0,
}
"""The 16 SD1.5 transformer blocks and their resolution level: the latent grid of level l is the latent
downsampled l times (64, 32, 16, 8 cells for a 512 px frame)."""
LEVELS = 4


def comfy_attention(q, k, v, heads, mask=None, **kwargs):
    """ComfyUI's optimized attention, looked up at each call (other nodes may swap the global)."""
    return comfy_attention_module.optimized_attention(q, k, v, heads, mask=mask, **kwargs)


def is_ours(patch, name: str) -> bool:
    """Whether a registered replacement is DiffFERV's attn1/attn2 patch (by marker; see patches.py)."""
    return getattr(patch, "diffferv_patch", None) == name


def _registered(model, name: str, key: tuple[str, int]) -> list[tuple[tuple, object]]:
    """(registry key, patch) of the replacements ComfyUI would consider for this block."""
    table = model.model_options["transformer_options"].get("patches_replace", {}).get(name, {})
    return [(k, table[k]) for k in ((*key, 0), key) if k in table]


def _transformers(unet, name: str, number: int) -> list:
    """The SpatialTransformer layers of one UNet block ([] when it has none or does not exist)."""
    try:
        module = unet.middle_block if name == "middle" else getattr(unet, f"{name}_blocks")[number]
        return [layer for layer in module if hasattr(layer, "transformer_blocks")]
    except (AttributeError, IndexError, TypeError):
        return []


def attention_layout(model) -> dict[tuple[str, int, int], tuple[int, ...]]:
    """(name, number, transformer index) -> (self-attention heads, q width, k width, cross-attention
    heads, q width, context width) of every transformer block at the SD1.5 attention positions of the
    MODEL's UNet: what must match for one UNet's preservation features to fit another's blocks
    (``editing/identity.py``). Reads module attributes only."""
    unet = model.get_model_object("diffusion_model")
    layout = {}
    for name, number in SD15_SELF_ATTENTION_LEVELS:
        blocks = [block for layer in _transformers(unet, name, number) for block in layer.transformer_blocks]
        for index, block in enumerate(blocks):
            attn1, attn2 = block.attn1, block.attn2
            layout[(name, number, index)] = (
                int(attn1.heads),
                int(attn1.to_q.out_features),
                int(attn1.to_k.out_features),
                int(attn2.heads),
                int(attn2.to_q.out_features),
                int(attn2.to_k.in_features),
            )
    return layout


def _check_sd15(model) -> None:
    unet = model.get_model_object("diffusion_model")
    for name, number in SD15_SELF_ATTENTION_LEVELS:
        found = bool(_transformers(unet, name, number))
        if not found:
            raise ValueError(
                f"the MODEL has no transformer block at {name} {number}: DiffFERV temporal attention needs a "
                "Stable Diffusion 1.5 UNet (or a fine-tune of it)"
            )


def apply_temporal_attention(
    model,
    trajectories: TrajectorySet | None,
    window: int = 3,
    swcfa_levels: tuple[bool, ...] = (True,) * LEVELS,
    tta_levels: tuple[bool, ...] = (True,) * LEVELS,
):
    """A clone of `model` (ModelPatcher of an SD1.5 UNet) with SWCFA/TTA on the self-attention blocks
    of the enabled levels (index 0 = full latent size) and cross-attention map control everywhere."""
    if len(swcfa_levels) != LEVELS or len(tta_levels) != LEVELS:
        raise ValueError(f"give one SWCFA and one TTA switch per resolution level ({LEVELS} each)")
    if any(tta_levels):
        if trajectories is None:
            raise ValueError("trajectory attention is on at some resolution but no TRAJECTORIES were given")
        for level, on in enumerate(tta_levels):
            grid = level_grid(trajectories.image_size, level)
            if on and grid not in trajectories.grids:
                have = ", ".join(f"{h}x{w}" for h, w in sorted(trajectories.grids)) or "none"
                raise ValueError(
                    f"TRAJECTORIES have no {grid[0]}x{grid[1]} grid (level {level} of "
                    f"{trajectories.image_size[1]}x{trajectories.image_size[0]} frames; they have: {have}): "
                    "turn TTA off at that resolution or compute the trajectories for it"
                )
    _check_sd15(model)
    patched = model.clone()
    per_level = [
        TemporalSelfAttention(
            window=window,
            swcfa=swcfa_levels[level],
            tta=tta_levels[level],
            trajectories=trajectories if tta_levels[level] else None,
            attention_fn=comfy_attention,
        )
        for level in range(LEVELS)
    ]
    for key, level in SD15_SELF_ATTENTION_LEVELS.items():
        for registry_key, patch in _registered(patched, "attn1", key):
            if not is_ours(patch, "attn1"):
                raise ValueError(
                    f"another node already replaces the self-attention of block {registry_key} "
                    f"({getattr(patch, '__qualname__', type(patch).__name__)}); DiffFERV temporal attention "
                    "replaces the same attention and cannot run with it: remove that node from the MODEL's "
                    "chain or apply it on a MODEL without DiffFERV temporal attention"
                )
        if swcfa_levels[level] or tta_levels[level]:
            patched.set_model_attn1_replace(per_level[level], *key)
        _install_cross_attention(patched, key)
    return patched


def _install_cross_attention(model, key: tuple[str, int]) -> None:
    registered = _registered(model, "attn2", key)
    if not registered:
        model.set_model_attn2_replace(CrossAttentionControl(comfy_attention), *key)
        return
    registry_key, patch = registered[0]  # the one ComfyUI runs: the indexed key wins
    previous = patch.previous if is_ours(patch, "attn2") else patch
    model.set_model_attn2_replace(CrossAttentionControl(comfy_attention, previous), *registry_key)


def with_control(model, control: PreservationControl):
    """A clone of a temporally patched `model` whose runs record/inject through `control`."""
    if not patched_blocks(model)["attn2"]:
        raise ValueError(
            "the MODEL has no DiffFERV attention patches: connect it through DiffFERV Apply Temporal Attention"
        )
    controlled = model.clone()
    controlled.model_options["transformer_options"][CONTROL_KEY] = control
    return controlled


def patched_blocks(model) -> dict[str, list[tuple]]:
    """The registry keys where DiffFERV's attn1 and attn2 replacements are the ones ComfyUI will run."""
    out: dict[str, list[tuple]] = {"attn1": [], "attn2": []}
    for name, found in out.items():
        for key in SD15_SELF_ATTENTION_LEVELS:
            registered = _registered(model, name, key)
            if registered and is_ours(registered[0][1], name):
                found.append(registered[0][0])
    return out


def swcfa_window(model) -> int:
    """The largest SWCFA window of DiffFERV's attn1 patches on `model` (1 without any): what sizes the
    patches' largest piece of work (``attention.memory.patch_bytes``)."""
    windows = [
        getattr(registered[0][1], "window", 1) if getattr(registered[0][1], "swcfa", False) else 1
        for key in patched_blocks(model)["attn1"]
        for registered in [_registered(model, "attn1", key[:2])]
    ]
    return max(windows, default=1)


def keep_trajectory_groups(model, windows: int) -> None:
    """Size the trajectory-group cache of DiffFERV's attn1 patches on `model` for a run of `windows` windows
    per step, at every grid (resolution level) the patches attend at."""
    keys = [key[:2] for key in patched_blocks(model)["attn1"]]
    grids = len({SD15_SELF_ATTENTION_LEVELS[key] for key in keys})
    for key in keys:
        _registered(model, "attn1", key)[0][1].keep_groups(windows * grids)
