"""Edits confined to a mask: Preservation Inject Sampler's mask input inside a real ComfyUI, tiny random
SD1.5-shaped model, the demo clip's frames (the set-up of tests/test_editing.py), both cache modes, in fp32
and in fp16 / bf16."""

from dataclasses import replace

import pytest
import torch
from comfy_harness import HALF_PRECISION, HALF_TOLERANCE, build_unet, encode_clip, relative_difference
from test_editing import FRAMES, SOURCE, clip, edit, invert  # noqa: F401  (clip: the module's fixture)

EDIT = "a photo of an old man with glasses"
STEPS = 4


def half_mask(frames: int = 1, size: int = 64) -> torch.Tensor:
    """1 on the left half of the frame (where the edit may act), 0 on the right."""
    mask = torch.zeros(frames, size, size)
    mask[:, :, : size // 2] = 1
    return mask


@pytest.fixture(scope="module", params=["store", "recompute"])
def edits(request, comfy, clip) -> dict:  # noqa: F811
    """The sampler's outputs, per cache mode: masked (hard edge and feathered), masked with the source
    prompt, one mask per frame, and the unmasked reconstruction."""
    inversion = invert(comfy, clip, request.param, steps=STEPS)[0]
    per_frame = half_mask(FRAMES)
    per_frame[1:] = 0  # only the first frame may change
    return {
        "mode": request.param,
        "inversion": inversion,
        "masked": edit(comfy, clip, inversion, EDIT, mask=half_mask(), mask_feather_px=0),
        "feathered": edit(comfy, clip, inversion, EDIT, mask=half_mask(), mask_feather_px=16),
        "masked_source_prompt": edit(comfy, clip, inversion, SOURCE, mask=half_mask(), mask_feather_px=0),
        "per_frame": edit(comfy, clip, inversion, EDIT, mask=per_frame, mask_feather_px=0),
        "reconstruction": edit(comfy, clip, inversion, SOURCE),
    }


def test_outside_the_mask_the_output_is_the_source_and_inside_the_prompt_acts(clip, edits):  # noqa: F811
    source = clip.latent["samples"]
    masked = edits["masked"]
    outside = (masked - source)[..., 4:].abs().max()
    reconstruction = (edits["reconstruction"] - source)[..., 4:].abs().mean()
    prompt_effect = (masked - edits["masked_source_prompt"])[..., :4].abs().mean()
    print(
        f"\n{edits['mode']}: outside the mask max |masked edit - source latent| {outside:.2e} (unmasked "
        f"reconstruction there: mean |error| {reconstruction:.4f}); inside, mean |edit - same-prompt edit| "
        f"{prompt_effect:.4f} (|latent| {source.abs().mean():.4f})"
    )
    assert outside < 1e-5  # the source latent itself, up to the model-space scaling's rounding
    assert prompt_effect > 0.05


def test_one_mask_per_frame_and_a_feathered_edge(clip, edits):  # noqa: F811
    source = clip.latent["samples"]
    per_frame = edits["per_frame"]
    assert (per_frame[1:] - source[1:]).abs().max() < 1e-5 and (per_frame[0] - source[0]).abs().max() > 0.05
    soft = edits["feathered"] - source
    # the feather lets the edit reach the first cell of the kept side, fading; it stops before the far edge
    assert soft[..., 4].abs().mean() > 1e-3 and (edits["masked"] - source)[..., 4].abs().max() < 1e-5
    assert soft[..., 7].abs().max() < 1e-5


def test_a_mask_that_does_not_fit_is_refused_by_name(comfy, clip, edits):  # noqa: F811
    with pytest.raises(Exception, match=r"mask: 2 masks for a clip of 6 frames"):
        edit(comfy, clip, edits["inversion"], EDIT, mask=half_mask(2))
    with pytest.raises(Exception, match=r"mask: the mask is 32x32 px and the frames are 64x64"):
        edit(comfy, clip, edits["inversion"], EDIT, mask=half_mask(1, 32))


def two_face_clip(frames: int) -> torch.Tensor:
    """128x256: the demo clip's talking face on the left, the astronaut's face (tests/assets) drifting right
    by 1 px a frame on the right."""
    import numpy as np
    from comfyui_diffferv.video.decode import read_clip
    from conftest import DEMO_CLIP, ROOT
    from PIL import Image

    def area(image: torch.Tensor) -> torch.Tensor:  # [..., H, W, 3] -> 128x128
        return torch.nn.functional.interpolate(image.movedim(-1, -3), size=(128, 128), mode="area").movedim(
            -3, -1
        )

    portrait = np.array(Image.open(ROOT / "tests" / "assets" / "astronaut_256.jpg").convert("RGB"))
    face = area(torch.from_numpy(portrait[15:111, 62:158]).float()[None] / 255)[0]
    video = torch.empty(frames, 128, 256, 3)
    video[:, :, :128] = area(read_clip(DEMO_CLIP, frames).frames)
    for t in range(frames):
        video[t, :, 128:] = face.roll(t, dims=1)
    return video


def test_on_a_clip_with_two_faces_one_is_edited_and_the_other_untouched(comfy, tiny_sd15, clip):  # noqa: F811
    """Face Mask picks the right face; the masked edit changes it and leaves the left face's latent as it was."""
    frames = two_face_clip(4)
    (mask, _), _ = comfy.run_node(
        "DiffFERV_FaceMask", frames=frames, region="face", grow_px=4, pick="left-to-right", face_index=1
    )
    assert mask[..., :128].sum() == 0 and (mask[..., 128:].sum((1, 2)) > 1000).all()
    two_faces = encode_clip(comfy, frames, tiny_sd15, clip.model)
    inversion = invert(comfy, two_faces, "recompute", steps=STEPS)[0]
    edited = edit(comfy, two_faces, inversion, EDIT, mask=mask, mask_feather_px=8)
    change = (edited - two_faces.latent["samples"]).abs()
    left_face, right_face = change[..., 4:13, 4:13], change[..., 4:12, 20:28]  # latent cells of each face
    print(
        f"\ntwo faces: left face max |change| {left_face.max():.2e}, right face mean |change| {right_face.mean():.4f}"
    )
    assert left_face.max() < 1e-5 and right_face.mean() > 0.05


WINDOWED = [("store", "DiffFERV windows"), ("recompute", "standard_uniform")]


@pytest.fixture(scope="module")
def long_clip(comfy, tiny_sd15, input_clip):
    """The 8 frames of tests/test_context_windows.py, with its tiny temporal model."""
    from test_context_windows import FRAMES as WINDOWED_FRAMES
    from test_context_windows import load_clip

    return load_clip(comfy, tiny_sd15, input_clip, WINDOWED_FRAMES)


@pytest.mark.parametrize("mode, windows", WINDOWED, ids=[f"{m}-{w.replace(' ', '_')}" for m, w in WINDOWED])
def test_in_context_windows_outside_the_mask_stays_the_source(comfy, long_clip, mode, windows):
    """8 frames sampled in windows of 4 overlapping by 1: Context Windows (DiffFERV) (the same windows at
    every step) in the store mode, the core node's standard_uniform schedule (windows that move from step
    to step, which the store mode refuses) in the recompute mode. The mask differs from frame to frame
    (left half on even frames, right half on odd ones), so a blend that took another frame's mask or
    inverted latent would show outside it."""
    from test_context_windows import FRAMES as WINDOWED_FRAMES
    from test_context_windows import WINDOW, core_windows, diffferv_windows, unet_calls
    from test_context_windows import edit as windowed_edit
    from test_context_windows import invert as windowed_invert

    long = long_clip
    model = (
        diffferv_windows(comfy, long.model)
        if windows == "DiffFERV windows"
        else core_windows(comfy, long.model, windows)
    )
    mask = half_mask(WINDOWED_FRAMES)
    mask[1::2] = 1 - mask[1::2]
    with unet_calls(long.model) as calls:
        inversion, _ = windowed_invert(comfy, long, model, mode, steps=STEPS)
        masked = windowed_edit(comfy, long, model, inversion, EDIT, mask=mask, mask_feather_px=0)
    assert inversion.mode == mode and {window for _, window in calls} != {None}
    assert max(batch for batch, _ in calls) <= 3 * WINDOW  # the UNet saw windows, not the clip
    same_prompt = windowed_edit(comfy, long, model, inversion, SOURCE, mask=mask, mask_feather_px=0)
    source = long.latent["samples"]
    kept = torch.zeros_like(source, dtype=torch.bool)
    kept[0::2, ..., 4:] = True
    kept[1::2, ..., :4] = True
    outside = (masked - source)[kept].abs().max()
    inside = (masked - same_prompt)[~kept].abs().mean()
    print(
        f"\n{mode}, {windows}: outside the mask max |masked edit - source latent| {outside:.2e}; inside, "
        f"mean |edit - same-prompt edit| {inside:.4f}"
    )
    assert outside < 1e-5 and inside > 0.05


@pytest.mark.parametrize("dtype", HALF_PRECISION.values(), ids=HALF_PRECISION.keys())
@pytest.mark.parametrize("mode", ["store", "recompute"])
def test_a_masked_edit_in_half_precision_stays_close_to_fp32(comfy, clip, mode, dtype):  # noqa: F811
    """The masked edit (left half) with the UNet in fp16 / bf16: finite, outside the mask still the source
    latent, and within half precision's rounding of the fp32 run."""
    edits = {}
    for run_dtype in (torch.float32, dtype):
        run = replace(clip, model=build_unet(seed=5, output_scale=0.02, dtype=run_dtype))
        inversion = invert(comfy, run, mode, steps=STEPS)[0]
        edits[run_dtype] = edit(comfy, run, inversion, EDIT, mask=half_mask(), mask_feather_px=0)
    half = edits[dtype]
    outside = float((half - clip.latent["samples"])[..., 4:].abs().max())
    difference = relative_difference(half, edits[torch.float32])
    print(
        f"\nmask, {mode}, {dtype}: mean |half - fp32| / mean |fp32| = {difference:.4f}, outside {outside:.1e}"
    )
    assert torch.isfinite(half).all() and outside < 1e-5
    assert difference < HALF_TOLERANCE[dtype]
