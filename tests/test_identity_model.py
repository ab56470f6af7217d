"""The identity model (IP-FaceDiff's eps_i, ``editing/identity.py``): DDIM Invert With Cache on one SD1.5
UNet, Preservation Inject Sampler on another of the same layout, inside a real ComfyUI, on the demo
clip's frames with tiny random-weight UNets. The features come from the identity model in both cache
modes (two UNet calls per step in recompute mode, the same frames as the in-batch path when both UNets
hold the same weights, other frames than the edit model's own features); a LoRA-style clone works in
store mode, like the same weights baked into a UNet of their own, and is refused in recompute mode;
other layouts are refused; all of it under context windows too; and both UNets in fp16 / bf16."""

from dataclasses import replace

import pytest
import torch
from comfy_harness import (
    HALF_PRECISION,
    HALF_TOLERANCE,
    build_unet,
    free_memory_for,
    relative_difference,
    rows_per_step,
    unet_calls,
)
from test_context_windows import WINDOW, diffferv_windows, edit, invert, load_clip, temporal

FRAMES, STEPS = 8, 3
TOLERANCE = 2e-3  # store (fp16 q, k and maps) vs recompute (fp32), as in test_context_windows
CACHE_MODES = ("store", "recompute")


@pytest.fixture(scope="module")
def clip(comfy, tiny_sd15, input_clip):
    return load_clip(comfy, tiny_sd15, input_clip, FRAMES)  # its model (UNet seed 5) samples the edits


def unet(seed: int, **options):
    return build_unet(seed=seed, output_scale=0.02, **options)


@pytest.fixture(scope="module")
def identity(comfy, clip):
    return temporal(comfy, unet(9), clip.trajectories)


@pytest.fixture(scope="module")
def inverted(comfy, clip, identity):
    return {mode: invert(comfy, clip, identity, mode, steps=STEPS)[0] for mode in CACHE_MODES}


def largest(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_identity_features_reach_the_edit_in_both_cache_modes(comfy, clip, identity, inverted):
    with unet_calls(identity) as identity_calls, unet_calls(clip.model) as edit_calls:
        recomputed = edit(comfy, clip, clip.model, inverted["recompute"])
    # recompute: per step one call of the identity UNet on the source chunk, one of the edit UNet on the
    # edit and negative chunks
    assert identity_calls == [(FRAMES, None)] * STEPS and edit_calls == [(2 * FRAMES, None)] * STEPS
    stored = edit(comfy, clip, clip.model, inverted["store"])
    # the same inverted latents, the edit model's own features (its in-batch source chunk)
    own = edit(comfy, clip, clip.model, replace(inverted["recompute"], identity=clip.model))
    modes, from_own = largest(stored, recomputed), largest(recomputed, own)
    print(
        f"\nidentity model: store vs recompute {modes:.2e}, vs the edit model's own features {from_own:.2e}"
    )
    assert modes < TOLERANCE and from_own > 20 * TOLERANCE


def test_the_identity_unet_runs_once_per_step_under_a_split(comfy, clip, identity, inverted, monkeypatch):
    """ComfyUI's free memory made to fit one chunk of the clip's frames (a low-VRAM GPU's cond/uncond
    split): the identity UNet still runs once per step and the frames are those of the unsplit run."""
    with rows_per_step(identity, clip.model) as steps:
        unsplit = edit(comfy, clip, clip.model, inverted["recompute"])
    unsplit_rows = list(steps.values())
    with monkeypatch.context() as patch, rows_per_step(identity, clip.model) as steps:
        free_memory_for(patch, clip.model, FRAMES, clip.latent["samples"])
        split = edit(comfy, clip, clip.model, inverted["recompute"])
    split_rows, difference = list(steps.values()), largest(split, unsplit)
    print(f"\nidentity UNet, UNet rows per step: unsplit {unsplit_rows}, split {split_rows}")
    print(f"identity UNet: max abs latent difference split vs unsplit {difference:.2e}")
    assert unsplit_rows == [[FRAMES, 2 * FRAMES]] * STEPS
    assert split_rows == [[FRAMES, FRAMES, FRAMES]] * STEPS
    assert difference < 1e-5


def test_two_calls_with_the_same_weights_give_the_in_batch_frames(comfy, clip):
    """An identity UNet that is a copy of the edit UNet (its own module, the same weights) goes through
    the two-call path and gives what the one-call path gives."""
    inversion, _ = invert(comfy, clip, clip.model, "recompute", steps=STEPS)
    copy = temporal(comfy, unet(5), clip.trajectories)
    in_batch = edit(comfy, clip, clip.model, inversion)
    with unet_calls(copy) as copy_calls:
        two_calls = edit(comfy, clip, clip.model, replace(inversion, identity=copy))
    assert len(copy_calls) == STEPS
    assert largest(in_batch, two_calls) < 1e-5


def attention_deltas(model, seed: int = 3) -> dict[str, torch.Tensor]:
    """A LoRA-like change of every attention q and k projection of the MODEL's UNet (state-dict keys)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        key: 0.5 * weight.std() * torch.randn(weight.shape, generator=generator)
        for key, weight in model.model.state_dict().items()
        if key.endswith(("to_q.weight", "to_k.weight"))
    }


def test_a_lora_clone_as_identity_works_in_store_mode_and_is_refused_in_recompute(comfy, clip):
    deltas = attention_deltas(clip.model)
    lora = clip.model.clone()  # the edit model's UNet module, with weight patches
    assert len(lora.add_patches({key: (delta,) for key, delta in deltas.items()})) == len(deltas) > 0
    baked = unet(5)  # the same weights + deltas in a UNet of its own
    with torch.no_grad():
        state = baked.model.state_dict()
        for key, delta in deltas.items():
            state[key].add_(delta)
    baked = temporal(comfy, baked, clip.trajectories)
    from_lora = edit(comfy, clip, clip.model, invert(comfy, clip, lora, "store", steps=STEPS)[0])
    from_baked = edit(comfy, clip, clip.model, invert(comfy, clip, baked, "store", steps=STEPS)[0])
    plain = edit(comfy, clip, clip.model, invert(comfy, clip, clip.model, "store", steps=STEPS)[0])
    assert largest(from_lora, from_baked) < 1e-4 and largest(from_lora, plain) > 20 * TOLERANCE
    inversion, _ = invert(comfy, clip, lora, "recompute", steps=STEPS)
    with pytest.raises(
        ValueError, match=r"runs the UNet of the inversion's model .* with other weight patches"
    ):
        edit(comfy, clip, clip.model, inversion)


@pytest.mark.parametrize("mode", CACHE_MODES)
def test_other_layouts_are_refused(comfy, clip, mode):
    wide = temporal(comfy, unet(9, channels=64), clip.trajectories)
    inversion, _ = invert(comfy, clip, wide, mode, steps=1)
    with pytest.raises(
        ValueError,
        match=r"model \(the sampler's, the edit model\) and the inversion's model \(DDIM Invert With Cache's, "
        r"the identity model\) have different UNet layouts: block \('input', 1, 0\) has self-attention q "
        r"width 32 in the sampler's model and 64 in the inversion's.*or run DDIM Invert With Cache on",
    ):
        edit(comfy, clip, clip.model, inversion)


def test_identity_model_under_context_windows(comfy, clip, identity):
    """Both models in Context Windows (DiffFERV) (window 4, overlap 1 over 8 frames): the identity UNet
    runs each window's source chunk, store and recompute agree, the features are the identity's."""
    identity_windows, edit_windows = (diffferv_windows(comfy, model) for model in (identity, clip.model))
    stored, _ = invert(comfy, clip, identity_windows, "store", steps=STEPS)
    recomputed, _ = invert(comfy, clip, identity_windows, "recompute", steps=STEPS)
    from_store = edit(comfy, clip, edit_windows, stored)
    with unet_calls(identity) as identity_calls, unet_calls(clip.model) as edit_calls:
        from_recompute = edit(comfy, clip, edit_windows, recomputed)
    windows = [(0, 1, 2, 3), (3, 4, 5, 6), (4, 5, 6, 7)]
    assert identity_calls == [(WINDOW, window) for window in windows] * STEPS
    assert edit_calls == [(2 * WINDOW, window) for window in windows] * STEPS
    own = edit(comfy, clip, edit_windows, replace(recomputed, identity=clip.model))
    modes, from_own = largest(from_store, from_recompute), largest(from_recompute, own)
    print(f"\nidentity model in windows: store vs recompute {modes:.2e}, vs own features {from_own:.2e}")
    assert modes < TOLERANCE and from_own > 20 * TOLERANCE


def test_models_that_do_not_fit_otherwise_are_refused(comfy, clip, identity):
    """Another noise schedule (zero terminal SNR on the edit model), and temporal attention on blocks
    where the identity model has none (its 8x8 level off), cannot take the identity's features."""
    inversion, _ = invert(comfy, clip, identity, "store", steps=1)
    (zsnr,), _ = comfy.run_node("ModelSamplingDiscrete", model=clip.model, sampling="eps", zsnr=True)
    with pytest.raises(ValueError, match="model: its noise schedule differs from the inversion's model's"):
        edit(comfy, clip, zsnr, inversion)
    coarse_off = temporal(comfy, unet(9), clip.trajectories, swcfa_8=False, tta_8=False)
    inversion, _ = invert(comfy, clip, coarse_off, "store", steps=1)
    with pytest.raises(
        ValueError,
        match=r"self-attention blocks \[\('middle', 0\)\] that the inversion's model .* leaves plain",
    ):
        edit(comfy, clip, clip.model, inversion)


@pytest.mark.parametrize("dtype", HALF_PRECISION.values(), ids=HALF_PRECISION.keys())
def test_identity_model_in_half_precision_stays_close_to_fp32(comfy, clip, dtype):
    """Both UNets in fp16 / bf16, recompute (the identity UNet's one-step store on the call's device, in
    its dtype): per step one identity call and one edit call, the edit finite and within half precision's
    rounding of the fp32 run."""
    edits = {}
    for run_dtype in (torch.float32, dtype):
        identity = temporal(comfy, unet(9, dtype=run_dtype), clip.trajectories)
        model = temporal(comfy, unet(5, dtype=run_dtype), clip.trajectories)
        inversion, _ = invert(comfy, clip, identity, "recompute", steps=STEPS)
        with unet_calls(identity) as identity_calls, unet_calls(model) as edit_calls:
            edits[run_dtype] = edit(comfy, clip, model, inversion)
        assert identity_calls == [(FRAMES, None)] * STEPS and edit_calls == [(2 * FRAMES, None)] * STEPS
    assert torch.isfinite(edits[dtype]).all()
    difference = relative_difference(edits[dtype], edits[torch.float32])
    print(f"\nidentity model, {dtype}: mean |half - fp32| / mean |fp32| = {difference:.4f}")
    assert difference < HALF_TOLERANCE[dtype]
