"""Frame windows (windows/) and the temporal attention inside a context window, against ComfyUI's own
schedules and straightforward references. The window objects are ComfyUI's IndexListContextWindow."""

import inspect
import itertools

import pytest
import torch
from comfyui_diffferv.attention.control import Injection, PreservationControl
from comfyui_diffferv.attention.feature_store import Feature, FeatureStore
from comfyui_diffferv.attention.patches import TemporalSelfAttention
from comfyui_diffferv.flow.trajectory_set import TrajectorySet
from comfyui_diffferv.windows.frames import call_frames, describe, is_whole_clip
from comfyui_diffferv.windows.schedule import RunPlan, check_window_settings, static_windows
from naive_attention import attend, random_trajectories
from naive_attention import swcfa as naive_swcfa
from test_preservation_control import CONTROL_KEY, HEADS, INNER, SIGMAS
from test_temporal_attention import extra_options

CLIP_FRAMES, H, W = 10, 2, 3
GRID = random_trajectories(CLIP_FRAMES, H, W, keep=0.7, seed=11)
TRAJECTORIES = TrajectorySet(CLIP_FRAMES, (H * 8, W * 8), {(H, W): GRID})
TOL = {"atol": 1e-5, "rtol": 1e-5}
WINDOWS = {
    "consecutive": (3, 4, 5, 6),
    "looped": (8, 9, 0, 1),  # uniform_looped wraps around the clip's end
    "strided": (0, 2, 4, 6),  # uniform schedules with context_stride 2
    "repeated": (6, 8, 0, 2, 4, 6),  # a strided window longer than the clip repeats frames
}


@pytest.fixture(scope="module")
def core(comfy):
    import comfy.context_windows

    return comfy.context_windows


def context_window(core, frames):
    """ComfyUI's window object (0.8 also wants the clip's length)."""
    if "total_frames" in inspect.signature(core.IndexListContextWindow).parameters:
        return core.IndexListContextWindow(list(frames), total_frames=CLIP_FRAMES)
    return core.IndexListContextWindow(list(frames))


def window_options(core, frames, chunks=1, **more) -> dict:
    options = extra_options(chunks, H, W, **more)
    if frames is not None:
        options["context_window"] = context_window(core, frames)
    return options


def test_static_windows_are_comfyuis_standard_static(core):
    for frames, length, overlap in itertools.product(range(1, 40), (1, 2, 4, 8, 16), (0, 1, 3, 4, 7)):
        if overlap >= length:
            continue
        handler = core.IndexListContextHandler(
            core.get_matching_context_schedule(core.ContextSchedules.STATIC_STANDARD),
            core.get_matching_fuse_method(core.ContextFuseMethods.PYRAMID),
            context_length=length,
            context_overlap=overlap,
        )
        theirs = [tuple(w) for w in handler.context_schedule.func(frames, handler, {})]
        assert static_windows(frames, length, overlap) == theirs, (frames, length, overlap)


def test_window_settings_and_names():
    for length, overlap in ((16, 16), (4, 5), (0, 0), (8, -1)):
        with pytest.raises(ValueError, match="context"):
            check_window_settings(length, overlap)
    assert describe((12, 13, 14)) == "frames 12-14"
    assert describe((118, 119, 120, 0, 1)) == "frames 118-120, 0-1"
    assert describe(None) == "the whole clip"
    assert is_whole_clip(tuple(range(5)), 5) and not is_whole_clip((0, 1, 2, 3), 5)


def test_call_frames_reads_comfyuis_window(core):
    assert call_frames({}) is None
    assert call_frames({"context_window": context_window(core, [4, 5, 6])}) == (4, 5, 6)


def test_run_plan_counts_calls_and_the_largest_batch():
    windows = tuple(static_windows(121, 16, 4))
    assert len(windows) == 10 and windows[-1] == tuple(range(105, 121))
    plan = RunPlan(121, windows, steps=50, sampling_chunks=3)
    assert plan.windowed
    assert plan.inversion_calls == 500 and plan.sampling_calls == 500
    assert plan.largest_batch == 48
    assert plan.frame_evaluations == 160 * 50 + 160 * 50 * 3
    store = RunPlan(121, windows, steps=50, sampling_chunks=2, store_final_call=True)
    assert store.inversion_calls == 510 and store.largest_batch == 32
    single = RunPlan(12, tuple(static_windows(12, 16, 4)), steps=10, sampling_chunks=2)
    assert not single.windowed and single.largest_batch == 24
    assert "one window" in "\n".join(single.describe())
    assert "10 windows of up to 16 frames: 0-15, 12-27, 24-39, 36-51, ..." in "\n".join(plan.describe())


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_restricted_trajectories_link_what_the_clip_links(name):
    window = WINDOWS[name]
    restricted = GRID.restrict(window)
    assert restricted.frames == len(window)
    clip_ids = GRID.ids[list(window)]  # [W, cells]: the clip's trajectory of each (position, cell)
    same_clip = clip_ids.reshape(-1)[:, None] == clip_ids.reshape(-1)[None, :]
    same_window = restricted.ids.reshape(-1)[:, None] == restricted.ids.reshape(-1)[None, :]
    assert torch.equal(same_clip, same_window)


def naive_window_tta(q, k, v, window, chunks):
    """Token (p, n) of the batch attends to every token (p', n') of its chunk whose clip frames
    window[p], window[p'] put cells n, n' on one trajectory of the clip, token by token."""
    frames, cells = len(window), H * W
    ids = GRID.ids[list(window)]
    out = torch.empty_like(q)
    for c in range(chunks):
        for p in range(frames):
            for n in range(cells):
                members = [
                    (pp, nn) for pp in range(frames) for nn in range(cells) if ids[pp, nn] == ids[p, n]
                ]
                keys = torch.stack([k[c * frames + pp, nn] for pp, nn in members])
                values = torch.stack([v[c * frames + pp, nn] for pp, nn in members])
                out[c * frames + p, n] = attend(q[c * frames + p, n][None], keys, values, HEADS)[0]
    return out


@pytest.mark.parametrize("name", sorted(WINDOWS))
@pytest.mark.parametrize("chunks", [1, 3])
def test_patch_in_a_window_attends_along_the_clips_trajectories(core, name, chunks):
    """SWCFA slides over the window's frames as the batch holds them; TTA follows the clip's trajectories
    through the window's frames only."""
    window = WINDOWS[name]
    patch = TemporalSelfAttention(window=3, trajectories=TRAJECTORIES)
    generator = torch.Generator().manual_seed(len(window) * chunks)
    q, k, v = (torch.randn(chunks * len(window), H * W, INNER, generator=generator) for _ in range(3))
    got = patch(q, k, v, window_options(core, window, chunks))
    want = naive_window_tta(q, k, naive_swcfa(q, k, v, chunks, 3, HEADS), window, chunks)
    torch.testing.assert_close(got, want, **TOL)


def test_a_window_of_the_whole_clip_is_exactly_no_window(core):
    patch = TemporalSelfAttention(window=3, trajectories=TRAJECTORIES)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2 * CLIP_FRAMES, H * W, INNER, generator=generator) for _ in range(3))
    plain = patch(q, k, v, window_options(core, None, 2))
    windowed = patch(q, k, v, window_options(core, range(CLIP_FRAMES), 2))
    assert torch.equal(plain, windowed)


def test_patch_refuses_a_window_that_does_not_fit(core):
    patch = TemporalSelfAttention(window=3, trajectories=TRAJECTORIES)
    q, k, v = (torch.randn(4, H * W, INNER) for _ in range(3))
    with pytest.raises(ValueError, match=r"lists 3 frames but the attention batch holds 4"):
        patch(q, k, v, window_options(core, (0, 1, 2)))
    with pytest.raises(ValueError, match="reaches outside the 10 frames the TRAJECTORIES hold"):
        patch(q, k, v, window_options(core, (8, 9, 10, 11)))


def test_store_keeps_overlapping_windows_apart(core):
    """Two overlapping windows record their own features at the same step; the sampler's call on each
    window gets that window's, and a window nobody recorded is a clear error."""
    store = FeatureStore(dtype=torch.float32)
    record = PreservationControl(SIGMAS, cond_roles={0: "source"}, capture="source", store=store)
    patch = TemporalSelfAttention(window=3, trajectories=TRAJECTORIES)
    first, second = (0, 1, 2, 3), (2, 3, 4, 5)
    recorded = {}
    for seed, window in enumerate((first, second)):
        q, k, v = (
            torch.randn(4, H * W, INNER, generator=torch.Generator().manual_seed(seed)) for _ in range(3)
        )
        options = window_options(
            core,
            window,
            **{CONTROL_KEY: record, "sigmas": torch.full((4,), SIGMAS[1]), "cond_or_uncond": [0]},
        )
        patch(q, k, v, options)
        recorded[window] = (q, k)
    assert store.windows() == [first, second]
    for window, (q, k) in recorded.items():
        cached_q, cached_k = store.get(1, ("input", 1, 0), Feature.SELF_QK, window)
        assert torch.equal(cached_q, q) and torch.equal(cached_k, k)
    inject = PreservationControl(
        SIGMAS, cond_roles={0: "edit"}, store=store, injections={"edit": Injection()}
    )
    q, k, v = (torch.randn(4, H * W, INNER) for _ in range(3))
    for window in (first, second):
        options = window_options(
            core,
            window,
            **{CONTROL_KEY: inject, "sigmas": torch.full((4,), SIGMAS[1]), "cond_or_uncond": [0]},
        )
        plan = inject.plan(options)
        q_swcfa, k_swcfa = inject.self_attention(plan, ("input", 1, 0), q.clone(), k.clone(), 4).swcfa()
        assert torch.equal(q_swcfa, recorded[window][0]) and torch.equal(k_swcfa, recorded[window][1])
    options = window_options(
        core,
        (4, 5, 6, 7),
        **{CONTROL_KEY: inject, "sigmas": torch.full((4,), SIGMAS[1]), "cond_or_uncond": [0]},
    )
    with pytest.raises(
        KeyError, match=r"no cached features for frames 4-7 .* the inversion ran with other context"
    ):
        patch(q, k, v, options)
