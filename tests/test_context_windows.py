"""DDIM Invert With Cache and Preservation Inject Sampler under ComfyUI's context windows, inside a real
ComfyUI, on the demo clip's frames, with the tiny random-weight SD1.5-shaped model: exactness with one
window, every fuse method and schedule of the core node, store = recompute, the UNet batch bounded by
the window, the whole 121-frame clip in both cache modes, speed mode's keyframes in windows, and windows
and speed mode with the UNet in fp16 / bf16."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from comfy_harness import (
    HALF_PRECISION,
    HALF_TOLERANCE,
    Clip,
    build_unet,
    encode_clip,
    load_video,
    relative_difference,
    sample,
    schema_defaults,
    unet_calls,
)
from comfy_harness import core_windows as harness_core_windows
from comfy_harness import invert as invert_clip
from conftest import ROOT
from test_editing import PLAIN, SOURCE

FRAMES, WINDOW, OVERLAP, STEPS = 8, 4, 1, 2
EDIT = "a photo of an old woman with glasses"
LONG_CLIP = ROOT / "workflows" / "media" / "talking_face_long.mp4"
TEMPORAL = "DiffFERV_ApplyTemporalAttention"


def load_clip(comfy, tiny_sd15, video: str, frames: int, seed: int = 5) -> Clip:
    """The first `frames` frames of `video` (0: all), edited by the tiny UNet `seed` with temporal
    attention."""
    return load_frames(comfy, tiny_sd15, load_video(comfy, video, frames), seed)


def load_frames(comfy, tiny_sd15, images, seed: int = 5) -> Clip:
    """A Clip of IMAGE frames: their trajectories, latents, and UNet `seed` with temporal attention."""
    clip = encode_clip(comfy, images, tiny_sd15, model=None)
    return replace(clip, model=temporal(comfy, build_unet(seed=seed, output_scale=0.02), clip.trajectories))


def temporal(comfy, unet, trajectories, **overrides):
    """`unet` through Apply Temporal Attention (DiffFERV), its defaults (window 3, SWCFA and TTA
    everywhere) but for `overrides`."""
    inputs = schema_defaults(comfy, TEMPORAL) | {"model": unet, "trajectories": trajectories}
    (model,), _ = comfy.run_node(TEMPORAL, **(inputs | overrides))
    return model


@pytest.fixture(scope="module")
def clip(comfy, tiny_sd15, input_clip) -> Clip:
    return load_clip(comfy, tiny_sd15, input_clip, FRAMES)


def diffferv_windows(comfy, model, length=WINDOW, overlap=OVERLAP, fuse="pyramid"):
    (windowed,), _ = comfy.run_node(
        "DiffFERV_ContextWindows",
        model=model,
        context_length=length,
        context_overlap=overlap,
        fuse_method=fuse,
    )
    return windowed


def core_windows(comfy, model, schedule, **options):
    """The core Context Windows (Manual) node, windows of WINDOW frames overlapping by OVERLAP."""
    return harness_core_windows(comfy, model, schedule, WINDOW, OVERLAP, **options)


def invert(comfy, clip: Clip, model, mode: str, steps: int = STEPS):
    """`clip` inverted by `model` with the source prompt: (INVERSION, noise [F, 4, h, w])."""
    return invert_clip(comfy, clip, SOURCE, model=model, cache_mode=mode, steps=steps)


def edit(comfy, clip: Clip, model, inversion, prompt: str = EDIT, **overrides) -> torch.Tensor:
    """The latent [F, 4, h, w] that `model` samples from `inversion` with `prompt`."""
    return sample(comfy, clip, inversion, prompt, model=model, **overrides)


def run_both(comfy, clip, model, mode, **edit_overrides):
    inversion, noise = invert(comfy, clip, model, mode)
    return inversion, noise, edit(comfy, clip, model, inversion, **edit_overrides)


@pytest.fixture(scope="module")
def unwindowed(comfy, clip):
    return {mode: run_both(comfy, clip, clip.model, mode) for mode in ("store", "recompute")}


@pytest.mark.parametrize("mode", ["store", "recompute"])
def test_one_window_covering_the_clip_is_exactly_no_windows(comfy, clip, unwindowed, mode):
    """Through ComfyUI's handler (its window path forced, one window of all frames, flat fuse) and
    through Context Windows (DiffFERV) with a window as long as the clip: the same bits."""
    import comfy.context_windows as core
    from comfyui_diffferv.nodes.window_glue import FrameWindowsHandler, install

    class OneWindow(FrameWindowsHandler):
        def should_use_context(self, *args, **kwargs):
            return True  # ComfyUI skips windows when the clip fits one; go through them anyway

    forced = OneWindow(
        core.get_matching_context_schedule(core.ContextSchedules.STATIC_STANDARD),
        core.get_matching_fuse_method(core.ContextFuseMethods.FLAT),
        context_length=FRAMES,
        context_overlap=0,
    )
    _, plain_noise, plain = unwindowed[mode]
    for model in (install(clip.model, forced), diffferv_windows(comfy, clip.model, length=FRAMES)):
        with unet_calls(clip.model) as calls:
            inversion, noise, edited = run_both(comfy, clip, model, mode)
        assert inversion.mode == mode
        assert torch.equal(noise, plain_noise) and torch.equal(edited, plain)
        windows = {window for _, window in calls}
        assert windows == (
            {tuple(range(FRAMES))}
            if isinstance(model.model_options["context_handler"], OneWindow)
            else {None}
        )


def test_store_and_recompute_give_the_same_frames_in_windows(comfy, clip, tiny_sd15):
    model = diffferv_windows(comfy, clip.model)
    store, _, from_store = run_both(comfy, clip, model, "store")
    _, _, from_recompute = run_both(comfy, clip, model, "recompute")
    windows = [(0, 1, 2, 3), (3, 4, 5, 6), (4, 5, 6, 7)]
    assert store.store.windows() == windows  # one entry per window: overlapping windows kept apart
    difference = float((from_store - from_recompute).abs().max())
    print(f"\nwindows {WINDOW}/{OVERLAP}: store vs recompute max abs latent difference {difference:.2e}")
    assert difference < 2e-3  # fp16 storage of q, k and maps vs recomputed fp32
    with torch.inference_mode():
        frames = [tiny_sd15.vae.decode(x) for x in (from_store, from_recompute)]
    assert float((frames[0] - frames[1]).abs().max()) < 2.0 / 255


def test_the_core_nodes_anchor_frame_runs_as_one_more_frame_of_its_window(comfy, clip):
    """The core node with causal_window_fix (newer ComfyUI) runs each window after the first with the frame
    before it prepended, and drops that frame's output. The patches take it as a frame of the call (SWCFA
    and TTA over the anchored window, the store keyed by the call's frames, the recompute mode's source
    chunk with the anchor's latent): store and recompute agree, and the edit with the source prompt
    brings the clip back as it does without the anchor."""
    model = core_windows(comfy, clip.model, "standard_static", anchor=True)
    with unet_calls(clip.model) as calls:
        store, _, from_store = run_both(comfy, clip, model, "store", prompt=SOURCE)
    windows = [(0, 1, 2, 3), (2, 3, 4, 5, 6), (3, 4, 5, 6, 7)]
    assert store.store.windows() == windows
    assert {window for _, window in calls} == set(windows)
    assert {batch for batch, _ in calls} == {4, 5, 8, 10}  # inversion, then cond + uncond
    _, _, from_recompute = run_both(comfy, clip, model, "recompute", prompt=SOURCE)
    _, _, unanchored = run_both(
        comfy, clip, core_windows(comfy, clip.model, "standard_static"), "recompute", prompt=SOURCE
    )
    source = clip.latent["samples"]
    errors = [float((x - source).abs().mean()) for x in (from_recompute, unanchored)]
    difference = float((from_store - from_recompute).abs().max())
    print(
        f"\nanchor frame: store vs recompute {difference:.2e}; reconstruction error {errors[0]:.4f} "
        f"(without the anchor {errors[1]:.4f}, |latent| {float(source.abs().mean()):.4f})"
    )
    assert difference < 2e-3
    assert errors[0] < 1.2 * errors[1] and errors[0] < 0.5 * float(source.abs().mean())


@pytest.mark.slow
def test_windows_reconstruct_as_well_as_one_batch(comfy, clip):
    """Edit prompt = source prompt (8 steps): the clip comes back about as close in windows as in one
    batch, and closer with the preservation features than without."""
    source = clip.latent["samples"]

    def error(model, **overrides) -> float:
        inversion, _ = invert(comfy, clip, model, "recompute", steps=8)
        return float((edit(comfy, clip, model, inversion, SOURCE, **overrides) - source).abs().mean())

    model = diffferv_windows(comfy, clip.model)
    windowed, whole, plain = error(model), error(clip.model), error(model, **PLAIN)
    print(
        f"\nreconstruction error: windows {windowed:.4f}, one batch {whole:.4f}, windows, no injection {plain:.4f}"
    )
    assert windowed < plain and windowed < 1.5 * whole


SCHEDULES = [
    ("standard_static", {}),
    ("batched", {}),
    ("standard_uniform", {}),
    ("standard_uniform", {"stride": 2}),
    ("looped_uniform", {}),
    ("looped_uniform", {"closed_loop": True}),
]


@pytest.mark.parametrize("anchor", [False, True], ids=["no anchor", "anchor"])
@pytest.mark.parametrize("schedule, options", SCHEDULES, ids=[f"{s}{o or ''}" for s, o in SCHEDULES])
def test_every_core_schedule_runs_in_recompute_mode(comfy, clip, schedule, options, anchor):
    """Every schedule of the core node, with and without its anchor frame (causal_window_fix)."""
    model = core_windows(comfy, clip.model, schedule, anchor=anchor, **options)
    with unet_calls(clip.model) as calls:
        _, noise, edited = run_both(comfy, clip, model, "recompute")
    assert torch.isfinite(edited).all() and edited.shape == clip.latent["samples"].shape
    assert max(batch for batch, _ in calls) <= 3 * (WINDOW * options.get("stride", 1) + anchor)
    assert all(
        batch % len(window) == 0 for batch, window in calls
    )  # the batch is chunks of the call's frames
    seen = {frame for _, window in calls for frame in window}
    assert seen == set(range(FRAMES))  # every frame went through the UNet, in windows only
    assert not (noise - clip.latent["samples"]).abs().max() < 1e-3  # the inversion moved


@pytest.mark.parametrize("fuse", ["pyramid", "relative", "flat", "overlap-linear"])
def test_every_fuse_method_runs_and_reconstructs(comfy, clip, fuse):
    """Edit prompt = source prompt brings the clip back, whichever way the windows are blended. (The
    store mode runs with pyramid and flat fusing above: no fuse method touches the cache.)"""
    model = core_windows(comfy, clip.model, "standard_static", fuse=fuse)
    _, _, edited = run_both(comfy, clip, model, "recompute", prompt=SOURCE)
    source = clip.latent["samples"]
    error = float((edited - source).abs().mean())
    print(f"\nfuse {fuse}: reconstruction error {error:.4f} (|latent| {float(source.abs().mean()):.4f})")
    assert error < 0.5 * float(source.abs().mean())


@pytest.mark.parametrize("schedule", ["standard_uniform", "looped_uniform"])
def test_store_mode_refuses_windows_that_move_and_auto_recomputes(comfy, clip, schedule):
    model = core_windows(comfy, clip.model, schedule)
    with pytest.raises(
        ValueError, match=f"context schedule {schedule} moves its windows .* standard_static or batched"
    ):
        invert(comfy, clip, model, "store")
    inversion, _ = invert(comfy, clip, model, "auto", steps=2)
    assert inversion.mode == "recompute"


def test_unsupported_window_settings_are_refused(comfy, clip):
    wan_inputs = dict(
        model=clip.model,
        context_length=9,
        context_overlap=4,
        context_schedule="standard_static",
        context_stride=1,
        closed_loop=False,
        fuse_method="pyramid",
    )
    if "freenoise" in {i.id for i in comfy.node_class("WanContextWindowsManual").GET_SCHEMA().inputs}:
        wan_inputs["freenoise"] = False
    (wan,), _ = comfy.run_node("WanContextWindowsManual", **wan_inputs)  # windows over dim 2 (WAN latents)
    with pytest.raises(ValueError, match="run over dimension 2, but DiffFERV's frames are the latent batch"):
        invert(comfy, clip, wan, "recompute")
    looping = core_windows(comfy, clip.model, "standard_static")
    looping.model_options["context_handler"].context_overlap = WINDOW
    with pytest.raises(ValueError, match=r"context_overlap is 4; use 0 to 3 \(less than context_length 4\)"):
        invert(comfy, clip, looping, "recompute")
    with pytest.raises(ValueError, match="context_overlap is 4; use 0 to 3 \\(less than context_length 4\\)"):
        diffferv_windows(comfy, clip.model, overlap=WINDOW)


@pytest.mark.parametrize("mode, chunks", [("store", 2), ("recompute", 3)])
def test_largest_unet_batch_is_window_times_chunks_whatever_the_length(
    comfy, tiny_sd15, input_clip, mode, chunks
):
    largest = {}
    for frames in (6, 14):
        clip = load_clip(comfy, tiny_sd15, input_clip, frames)
        model = diffferv_windows(comfy, clip.model)
        with unet_calls(clip.model) as calls:
            run_both(comfy, clip, model, mode)
        largest[frames] = max(batch for batch, _ in calls)
        assert {batch for batch, _ in calls} == {WINDOW, chunks * WINDOW}  # inversion, sampling
    assert largest == {6: chunks * WINDOW, 14: chunks * WINDOW}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["store", "recompute"])
def test_the_121_frame_clip_runs_in_windows(comfy, tiny_sd15, mode, tmp_path):
    """The whole long clip, through ComfyUI's nodes from Load Video to Video Combine, with windows of 16
    overlapping by 4 (tiny model, 64 px, 2 steps)."""
    import shutil

    shutil.copy(LONG_CLIP, comfy.workdir / "input" / LONG_CLIP.name)
    clip = load_clip(comfy, tiny_sd15, LONG_CLIP.name, 0)
    assert clip.latent["samples"].shape[0] == 121
    model = diffferv_windows(comfy, clip.model, length=16, overlap=4)
    with unet_calls(clip.model) as calls:
        inversion, _ = invert(comfy, clip, model, mode, steps=2)
        edited = edit(comfy, clip, model, inversion)
    assert inversion.mode == mode
    assert max(batch for batch, _ in calls) == 16 * (2 if mode == "store" else 3)
    (images,), _ = comfy.run_node("VAEDecode", samples={"samples": edited}, vae=tiny_sd15.vae)
    combine = "DiffFERV_VideoCombine"
    _, ui = comfy.run_node(
        combine, **schema_defaults(comfy, combine) | {"images": images, "filename_prefix": f"long_{mode}"}
    )
    written = comfy.output_path(ui["images"][0])
    from video_probe import probe

    assert probe(Path(written)).frames.shape == (121, 64, 64, 3)


def test_speed_mode_edits_the_keyframes_in_windows(comfy, tiny_sd15, input_clip):
    """Speed mode with context windows: Select Keyframes (every 2nd of 9 frames: 5 keyframes), the usual
    graph on the keyframes in Context Windows (DiffFERV) (window 4, overlap 1), Propagate Keyframe Edit.
    The UNet sees windows of keyframes only; the keyframes come out as decoded, the frames between take
    their change."""
    whole = load_video(comfy, input_clip, 9)
    (images, keyframe_set), _ = comfy.run_node("DiffFERV_SelectKeyframes", frames=whole, keyframe_every=2)
    assert keyframe_set.indices == (0, 2, 4, 6, 8)
    keys = load_frames(comfy, tiny_sd15, images)
    model = diffferv_windows(comfy, keys.model)
    with unet_calls(keys.model) as calls:
        inversion, _ = invert(comfy, keys, model, "recompute")
        edited = edit(comfy, keys, model, inversion)
    assert {window for _, window in calls} == {(0, 1, 2, 3), (1, 2, 3, 4)}  # keyframe positions
    assert max(batch for batch, _ in calls) == 3 * WINDOW
    (decoded,), _ = comfy.run_node("VAEDecode", samples={"samples": edited}, vae=tiny_sd15.vae)
    propagate = "DiffFERV_PropagateKeyframeEdit"
    (frames,), _ = comfy.run_node(
        propagate,
        **schema_defaults(comfy, propagate),
        source=whole,
        edited_keyframes=decoded,
        keyframe_set=keyframe_set,
    )
    assert frames.shape == whole.shape
    assert torch.allclose(frames[[0, 2, 4, 6, 8]], decoded, atol=1e-6)
    change = (frames - whole).abs().mean(dim=(1, 2, 3))
    print(f"\nspeed mode in windows: mean abs change per frame {[round(float(c), 3) for c in change]}")
    assert (change[[1, 3, 5, 7]] > 0.3 * change[[0, 2, 4, 6, 8]].mean()).all()


@pytest.mark.parametrize("dtype", HALF_PRECISION.values(), ids=HALF_PRECISION.keys())
def test_windows_in_half_precision_stay_close_to_fp32(comfy, clip, dtype):
    """The inversion and edit in Context Windows (DiffFERV) (window 4, overlap 1 over 8 frames; recompute,
    the long-clip workflow's mode; store measured the same) with the UNet in fp16 / bf16: finite, and
    within half precision's rounding of the same run in fp32."""
    mode = "recompute"
    edits = {}
    for run_dtype in (torch.float32, dtype):
        unet = temporal(comfy, build_unet(seed=5, output_scale=0.02, dtype=run_dtype), clip.trajectories)
        model = diffferv_windows(comfy, unet)
        with unet_calls(unet) as calls:
            inversion, _ = invert(comfy, clip, model, mode, steps=3)
            edits[run_dtype] = edit(comfy, clip, model, inversion)
        assert {window for _, window in calls} == {(0, 1, 2, 3), (3, 4, 5, 6), (4, 5, 6, 7)}
    assert torch.isfinite(edits[dtype]).all()
    difference = relative_difference(edits[dtype], edits[torch.float32])
    print(f"\nwindows, {mode}, {dtype}: mean |half - fp32| / mean |fp32| = {difference:.4f}")
    assert difference < HALF_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", HALF_PRECISION.values(), ids=HALF_PRECISION.keys())
def test_speed_mode_in_half_precision_stays_close_to_fp32(comfy, tiny_sd15, input_clip, dtype):
    """Speed mode (every 2nd of 5 frames: 3 keyframes, recompute) with the UNet in fp16 / bf16: the
    propagated frames are finite and within half precision's rounding of the fp32 run's."""
    whole = load_video(comfy, input_clip, 5)
    (images, keyframe_set), _ = comfy.run_node("DiffFERV_SelectKeyframes", frames=whole, keyframe_every=2)
    keys = load_frames(comfy, tiny_sd15, images)
    frames = {}
    for run_dtype in (torch.float32, dtype):
        model = temporal(comfy, build_unet(seed=5, output_scale=0.02, dtype=run_dtype), keys.trajectories)
        inversion, _ = invert(comfy, keys, model, "recompute", steps=3)
        edited = edit(comfy, keys, model, inversion)
        (decoded,), _ = comfy.run_node("VAEDecode", samples={"samples": edited}, vae=tiny_sd15.vae)
        (frames[run_dtype],), _ = comfy.run_node(
            "DiffFERV_PropagateKeyframeEdit",
            source=whole,
            edited_keyframes=decoded,
            keyframe_set=keyframe_set,
            backend="dis",
            consistency_threshold=1.0,
        )
    assert frames[dtype].shape == whole.shape and torch.isfinite(frames[dtype]).all()
    difference = relative_difference(frames[dtype], frames[torch.float32])
    print(f"\nspeed mode, {dtype}: mean |half - fp32| / mean |fp32| of the frames = {difference:.4f}")
    assert difference < HALF_TOLERANCE[dtype]


def test_the_trajectory_group_cache_is_sized_for_the_runs_windows(comfy, clip):
    """The nodes' glue sizes every TTA patch's cache for a step's windows at each grid it attends at: 40
    windows of 4 over 121 frames at the 4 grid levels keep 160 groups; a run with few windows keeps the
    default."""
    from types import SimpleNamespace

    from comfyui_diffferv.attention.patches import GROUPS_KEPT
    from comfyui_diffferv.nodes.attention_patches import _registered, patched_blocks
    from comfyui_diffferv.nodes.preservation_glue import temporal_model

    def kept(model) -> set[int]:
        return {
            _registered(model, "attn1", key[:2])[0][1].groups_kept for key in patched_blocks(model)["attn1"]
        }

    model = diffferv_windows(comfy, clip.model, length=4, overlap=1)
    assert kept(temporal_model(model, SimpleNamespace(frames=FRAMES))) == {GROUPS_KEPT}
    assert kept(temporal_model(model, SimpleNamespace(frames=121))) == {40 * 4}
