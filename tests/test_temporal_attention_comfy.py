"""The attention patches inside a real ComfyUI, on the tiny random SD1.5-shaped model."""

import pytest
import torch
from comfyui_diffferv.attention.control import PreservationControl
from comfyui_diffferv.attention.feature_store import Feature, FeatureStore
from comfyui_diffferv.flow.trajectory_set import TrajectorySet
from naive_attention import random_trajectories, single_frame_trajectories

FRAMES, SIZE = 4, 64  # 4 frames of 64x64 px: latent 8x8, UNet grids 8, 4, 2, 1
NODE = "DiffFERV_ApplyTemporalAttention"


GRIDS = [(8, 8), (4, 4), (2, 2), (1, 1)]  # the UNet's latent grids for 64x64 px frames


def trajectories(make) -> TrajectorySet:
    return TrajectorySet(
        FRAMES, (SIZE, SIZE), {(h, w): make(h, w, level) for level, (h, w) in enumerate(GRIDS)}
    )


UNEVEN = trajectories(lambda h, w, level: random_trajectories(FRAMES, h, w, keep=0.7, seed=level))
SINGLE = trajectories(lambda h, w, level: single_frame_trajectories(FRAMES, h, w))


def encode(clip, text: str) -> torch.Tensor:
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0]


@torch.no_grad()
def unet(patcher, x: torch.Tensor, sigma: float, context: torch.Tensor, cond_or_uncond) -> torch.Tensor:
    """One UNet evaluation the way ComfyUI's calc_cond_batch makes it: the patcher's transformer_options
    plus the per-call cond_or_uncond and sigmas."""
    import comfy.patcher_extension

    options = comfy.patcher_extension.copy_nested_dicts(patcher.model_options["transformer_options"])
    sigmas = torch.full((x.shape[0],), sigma)
    options.update(cond_or_uncond=list(cond_or_uncond), sigmas=sigmas)
    return patcher.model.apply_model(x, sigmas, c_crossattn=context, transformer_options=options)


@pytest.fixture(scope="module")
def batch(tiny_sd15):
    """Two chunks (uncond, cond) of FRAMES latent frames each, with their contexts."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * FRAMES, 4, SIZE // 8, SIZE // 8, generator=generator)
    cond, uncond = encode(tiny_sd15.clip, "a photo of a woman"), encode(tiny_sd15.clip, "")
    context = torch.cat([uncond.expand(FRAMES, -1, -1), cond.expand(FRAMES, -1, -1)])
    return x, context


def apply(comfy, model, trajectories, window=3, **switches):
    inputs = {f"{kind}_{size}": True for kind in ("swcfa", "tta") for size in (64, 32, 16, 8)} | switches
    (patched,), _ = comfy.run_node(NODE, model=model, trajectories=trajectories, window=window, **inputs)
    return patched


def test_window_1_and_single_frame_trajectories_give_the_unpatched_output(comfy, tiny_sd15, batch):
    from comfyui_diffferv.nodes.attention_patches import patched_blocks

    x, context = batch
    patched = apply(comfy, tiny_sd15.model, SINGLE, window=1)
    assert len(patched_blocks(patched)["attn1"]) == 16
    want = unet(tiny_sd15.model, x, 2.0, context, [1, 0])
    torch.testing.assert_close(unet(patched, x, 2.0, context, [1, 0]), want, atol=1e-6, rtol=1e-6)


def test_patches_change_the_output_and_leave_the_input_model_alone(comfy, tiny_sd15, batch):
    from comfyui_diffferv.nodes.attention_patches import SD15_SELF_ATTENTION_LEVELS, patched_blocks

    x, context = batch
    before = unet(tiny_sd15.model, x, 2.0, context, [1, 0])
    patched = apply(comfy, tiny_sd15.model, UNEVEN)
    assert patched is not tiny_sd15.model
    assert "patches_replace" not in tiny_sd15.model.model_options["transformer_options"]
    assert patched_blocks(tiny_sd15.model) == {"attn1": [], "attn2": []}
    assert patched_blocks(patched) == {name: list(SD15_SELF_ATTENTION_LEVELS) for name in ("attn1", "attn2")}
    out = unet(patched, x, 2.0, context, [1, 0])
    assert torch.isfinite(out).all() and not torch.allclose(out, before, atol=1e-4)
    assert torch.equal(unet(tiny_sd15.model, x, 2.0, context, [1, 0]), before)


def test_chunks_stay_separate_in_the_real_unet(comfy, tiny_sd15, batch):
    x, context = batch
    patched = apply(comfy, tiny_sd15.model, UNEVEN)
    both = unet(patched, x, 2.0, context, [1, 0])
    cond_only = unet(patched, x[FRAMES:], 2.0, context[FRAMES:], [0])
    torch.testing.assert_close(both[FRAMES:], cond_only, atol=1e-5, rtol=1e-5)


def test_resolution_switches_choose_the_patched_blocks(comfy, tiny_sd15):
    from comfyui_diffferv.nodes.attention_patches import SD15_SELF_ATTENTION_LEVELS, patched_blocks

    off = {"swcfa_64": False, "tta_64": False, "tta_8": False}
    patched = apply(comfy, tiny_sd15.model, UNEVEN, **off)
    attn1 = patched_blocks(patched)["attn1"]
    assert attn1 == [key for key, level in SD15_SELF_ATTENTION_LEVELS.items() if level != 0]
    middle = patched.model_options["transformer_options"]["patches_replace"]["attn1"][("middle", 0)]
    assert middle.swcfa and not middle.tta


def test_sampling_with_the_patches_runs_and_captures_every_block(comfy, tiny_sd15):
    from comfy.samplers import calculate_sigmas
    from comfyui_diffferv.nodes.attention_patches import SD15_SELF_ATTENTION_LEVELS, with_control

    patched = apply(comfy, tiny_sd15.model, UNEVEN)
    steps = 3
    sigmas = calculate_sigmas(patched.get_model_object("model_sampling"), "normal", steps)
    store = FeatureStore()
    control = PreservationControl(sigmas[:-1], capture="cond", store=store)
    (positive,), _ = comfy.run_node("CLIPTextEncode", clip=tiny_sd15.clip, text="a photo of a woman")
    (negative,), _ = comfy.run_node("CLIPTextEncode", clip=tiny_sd15.clip, text="")
    latent = {"samples": torch.zeros(FRAMES, 4, SIZE // 8, SIZE // 8)}
    (out,), _ = comfy.run_node(
        "KSampler",
        model=with_control(patched, control),
        seed=1,
        steps=steps,
        cfg=5.0,
        sampler_name="ddim",
        scheduler="normal",
        positive=positive,
        negative=negative,
        latent_image=latent,
        denoise=1.0,
    )
    assert out["samples"].shape == latent["samples"].shape and torch.isfinite(out["samples"]).all()

    blocks = [(*key, 0) for key in SD15_SELF_ATTENTION_LEVELS]
    expected = {(step, block, feature) for step in range(steps) for block in blocks for feature in Feature}
    assert set(store.recorded()) == expected
    widths = {0: 32, 1: 64, 2: 128, 3: 128}  # tiny model: 32 channels x channel_mult (1, 2, 4, 4)
    for key, level in SD15_SELF_ATTENTION_LEVELS.items():
        cells = (SIZE // 8 // 2**level) ** 2
        q, k = store.get(1, (*key, 0), Feature.SELF_QK)
        assert q.shape == k.shape == (FRAMES, cells, widths[level]) and q.dtype == torch.float32  # the UNet's
        (maps,) = store.get(1, (*key, 0), Feature.CROSS_MAPS)
        assert maps.shape == (FRAMES, 8, cells, 77)
        torch.testing.assert_close(maps.float().sum(-1), torch.ones(FRAMES, 8, cells), atol=2e-3, rtol=0)


def test_another_nodes_patches_are_respected(comfy, tiny_sd15, batch):
    from comfyui_diffferv.nodes.attention_patches import apply_temporal_attention, patched_blocks

    x, context = batch
    calls = []

    def foreign_cross(q, k, v, extra_options):
        calls.append(extra_options["block"])
        return torch.zeros_like(q)

    other = tiny_sd15.model.clone()
    other.set_model_attn2_replace(foreign_cross, "input", 1)
    patched = apply_temporal_attention(other, UNEVEN)
    unet(patched, x, 2.0, context, [1, 0])
    assert calls == [("input", 1)]  # still runs, wrapped
    assert ("input", 1) in patched_blocks(patched)["attn2"]

    def foreign_self(q, k, v, extra_options):
        return v

    clash = tiny_sd15.model.clone()
    clash.set_model_attn1_replace(foreign_self, "output", 9, 0)
    with pytest.raises(ValueError, match=r"already replaces the self-attention of block \('output', 9, 0\)"):
        apply_temporal_attention(clash, UNEVEN)
    again = apply_temporal_attention(apply_temporal_attention(tiny_sd15.model, UNEVEN, window=5), UNEVEN)
    assert again.model_options["transformer_options"]["patches_replace"]["attn1"][("input", 1)].window == 3


def test_missing_trajectory_grid_is_a_clear_error(comfy, tiny_sd15):
    from comfyui_diffferv.nodes.attention_patches import apply_temporal_attention

    partial = TrajectorySet(FRAMES, (SIZE, SIZE), {(8, 8): UNEVEN.grid(8, 8)})
    with pytest.raises(ValueError, match="no 4x4 grid"):
        apply_temporal_attention(tiny_sd15.model, partial)
    only_full = (True, False, False, False)
    apply_temporal_attention(tiny_sd15.model, partial, tta_levels=only_full)


def test_real_trajectories_of_a_non_square_clip_drive_the_patched_unet(comfy, tiny_sd15):
    """ComputeFlowTrajectories -> ApplyTemporalAttention -> UNet, on demo-clip frames of 64x128 px (the
    latent grids are 8x16 .. 1x2: height != width everywhere)."""
    from flow_clips import demo_frames

    frames = demo_frames(FRAMES, 128)[:, 32:96]  # [F, 64, 128, 3]
    (trajectories, _), _ = comfy.run_node(
        "DiffFERV_ComputeFlowTrajectories",
        frames=frames,
        backend="dis",
        consistency_threshold=1.0,
        preview_grid="1/8",
    )
    patched = apply(comfy, tiny_sd15.model, trajectories)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(FRAMES, 4, 8, 16, generator=generator)
    context = encode(tiny_sd15.clip, "a photo of a woman").expand(FRAMES, -1, -1)
    out = unet(patched, x, 2.0, context, [0])
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, unet(tiny_sd15.model, x, 2.0, context, [0]), atol=1e-4)
