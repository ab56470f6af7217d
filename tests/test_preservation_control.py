"""Capture / override of preservation features through the attention patches (pure torch)."""

import copy

import pytest
import torch
from comfyui_diffferv.attention.control import (
    CONTROL_KEY,
    ROLES_KEY,
    Injection,
    PreservationControl,
    SigmaClock,
)
from comfyui_diffferv.attention.feature_store import Feature, FeatureStore
from comfyui_diffferv.attention.patches import CrossAttentionControl, TemporalSelfAttention
from comfyui_diffferv.flow.trajectory_set import TrajectorySet
from naive_attention import attend, random_trajectories
from naive_attention import swcfa as naive_swcfa
from naive_attention import tta as naive_tta

HEADS, INNER, FRAMES, H, W = 2, 8, 4, 2, 3
SIGMAS = [14.6, 3.0, 0.5]
BLOCK = ("output", 4, 0)
TOL = {"atol": 1e-5, "rtol": 1e-5}
GRID = random_trajectories(FRAMES, H, W, keep=0.7, seed=5)
PATCH = TemporalSelfAttention(window=3, trajectories=TrajectorySet(FRAMES, (16, 24), {(H, W): GRID}))


def run_patch(q, k, v, extra_options):
    """The patch as ComfyUI calls it: on freshly projected q and k (it overwrites injected rows in place)."""
    return PATCH(q.clone(), k.clone(), v, extra_options)


def features(seed: int, chunks: int = 1, tokens: int = H * W):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(chunks * FRAMES, tokens, INNER, generator=generator) for _ in range(3)]


def options(control, sigma: float, cond_or_uncond=(0,), roles=None) -> dict:
    out = {
        "cond_or_uncond": list(cond_or_uncond),
        "n_heads": HEADS,
        "activations_shape": [len(cond_or_uncond) * FRAMES, 4, H, W],
        "block": BLOCK[:2],
        "block_index": BLOCK[2],
        "sigmas": torch.full((len(cond_or_uncond) * FRAMES,), sigma),
    }
    if control is not None:
        out[CONTROL_KEY] = control
    if roles is not None:
        out[ROLES_KEY] = tuple(roles)
    return out


def reference(q_swcfa, k_swcfa, q_tta, k_tta, v, chunks=1):
    return naive_tta(q_tta, k_tta, naive_swcfa(q_swcfa, k_swcfa, v, chunks, 3, HEADS), GRID, chunks, HEADS)


def capture(store: FeatureStore, seed: int, sigma: float):
    """Run the patch as an inversion call recording the 'source' chunk; returns its q, k, v and output."""
    control = PreservationControl(SIGMAS, cond_roles={0: "source"}, capture="source", store=store)
    q, k, v = features(seed)
    return q, k, v, run_patch(q, k, v, options(control, sigma))


def test_capture_then_override_with_the_same_features_gives_the_identical_output():
    store = FeatureStore(dtype=torch.float32)
    _, _, v, out = capture(store, seed=0, sigma=3.0)
    assert store.recorded() == [(1, BLOCK, Feature.SELF_QK)]
    control = PreservationControl(
        SIGMAS, cond_roles={0: "edit"}, store=store, injections={"edit": Injection()}
    )
    q_other, k_other, _ = features(seed=1)
    assert torch.equal(run_patch(q_other, k_other, v, options(control, 3.0)), out)


def test_override_takes_source_q_k_and_keeps_own_values():
    store = FeatureStore(dtype=torch.float32)
    q_src, k_src, _, _ = capture(store, seed=0, sigma=0.5)
    control = PreservationControl(
        SIGMAS, store=store, injections={"cond": Injection(), "uncond": Injection()}
    )
    q, k, v = features(seed=2, chunks=2)
    got = run_patch(q, k, v, options(control, 0.5, cond_or_uncond=(1, 0)))
    q2, k2 = q_src.repeat(2, 1, 1), k_src.repeat(2, 1, 1)
    torch.testing.assert_close(got, reference(q2, k2, q2, k2, v, chunks=2), **TOL)
    plain = run_patch(q, k, v, options(None, 0.5, cond_or_uncond=(1, 0)))
    assert not torch.allclose(got, plain)  # another source changes the output
    v_changed = v + 1.0
    assert not torch.allclose(run_patch(q, k, v_changed, options(control, 0.5, cond_or_uncond=(1, 0))), got)


def test_swcfa_and_tta_are_injected_at_their_own_steps():
    store = FeatureStore(dtype=torch.float32)
    q_src, k_src, _, _ = capture(store, seed=0, sigma=3.0)
    only_tta = Injection(swcfa_steps={0}, tta_steps=None)  # step 1: TTA from the source, SWCFA its own
    control = PreservationControl(SIGMAS, cond_roles={0: "edit"}, store=store, injections={"edit": only_tta})
    q, k, v = features(seed=3)
    got = run_patch(q, k, v, options(control, 3.0))
    torch.testing.assert_close(got, reference(q, k, q_src, k_src, v), **TOL)
    never = PreservationControl(
        SIGMAS,
        cond_roles={0: "edit"},
        store=store,
        injections={"edit": Injection(swcfa_steps=(), tta_steps=())},
    )
    assert torch.equal(run_patch(q, k, v, options(never, 3.0)), run_patch(q, k, v, options(None, 3.0)))


def test_features_are_keyed_by_sigma_not_call_order():
    store = FeatureStore(dtype=torch.float32)
    recorded = {sigma: capture(store, seed=int(sigma * 10), sigma=sigma)[:2] for sigma in (0.5, 14.6, 3.0)}
    assert sorted(step for step, _, _ in store.recorded()) == [0, 1, 2]
    control = PreservationControl(
        SIGMAS, cond_roles={0: "edit"}, store=store, injections={"edit": Injection()}
    )
    q, k, v = features(seed=9)
    for sigma in (3.0, 0.5, 14.6):
        q_src, k_src = recorded[sigma]
        torch.testing.assert_close(
            run_patch(q, k, v, options(control, sigma)), reference(q_src, k_src, q_src, k_src, v), **TOL
        )


def test_a_told_clock_keys_the_call_without_reading_its_sigmas_from_the_device():
    """The sampler's loop tells the run's SigmaClock each sigma before its calls: the control keys
    features by it and never reads the call's sigmas (a meta tensor here, which cannot be read: on a GPU,
    reading them makes the host wait inside every UNet call)."""
    store = FeatureStore(dtype=torch.float32)
    recorded = {sigma: capture(store, seed=int(sigma * 10), sigma=sigma)[:2] for sigma in SIGMAS}
    clock = SigmaClock()
    control = PreservationControl(
        SIGMAS, cond_roles={0: "edit"}, store=store, injections={"edit": Injection()}, clock=clock
    )
    q, k, v = features(seed=9)
    unreadable = options(control, 0.0)
    unreadable["sigmas"] = torch.empty(FRAMES, device="meta")
    with pytest.raises(RuntimeError, match="meta"):  # nothing told yet: the control reads the device
        run_patch(q, k, v, unreadable)
    for sigma in (3.0, 0.5, 14.6):
        clock.tell(sigma)
        q_src, k_src = recorded[sigma]
        torch.testing.assert_close(
            run_patch(q, k, v, unreadable), reference(q_src, k_src, q_src, k_src, v), **TOL
        )


def test_recompute_mode_copies_from_the_source_chunk_of_the_same_batch():
    q_src, k_src, v_src = features(seed=0)
    q, k, v = features(seed=4, chunks=2)
    batch = [torch.cat([a, b]) for a, b in zip((q_src, k_src, v_src), (q, k, v), strict=True)]
    control = PreservationControl(
        SIGMAS, injections={"edit": Injection(source="source"), "neg": Injection(source="source")}
    )
    # the sampler appended the source chunk to ComfyUI's two: the explicit roles say there are three
    got = run_patch(*batch, options(control, 14.6, cond_or_uncond=(0, 1), roles=("source", "edit", "neg")))
    alone = run_patch(q_src, k_src, v_src, options(None, 14.6))
    torch.testing.assert_close(got[:FRAMES], alone, **TOL)  # the source chunk computes its own features
    q3, k3 = q_src.repeat(3, 1, 1), k_src.repeat(3, 1, 1)
    torch.testing.assert_close(got, reference(q3, k3, q3, k3, batch[2], chunks=3), **TOL)
    store = FeatureStore(dtype=torch.float32)
    capture_control = PreservationControl(SIGMAS, cond_roles={0: "source"}, capture="source", store=store)
    run_patch(q_src, k_src, v_src, options(capture_control, 14.6))
    cached = PreservationControl(SIGMAS, store=store, injections={"edit": Injection(), "neg": Injection()})
    from_cache = run_patch(q, k, v, options(cached, 14.6, cond_or_uncond=(0, 1), roles=("edit", "neg")))
    torch.testing.assert_close(from_cache, got[FRAMES:], **TOL)


def test_fp16_store_keeps_features_close():
    store = FeatureStore(dtype=torch.float16)  # CPU fp16, as the paper stores them
    _, _, v, out = capture(store, seed=0, sigma=3.0)
    (q_cached, _) = store.get(1, BLOCK, Feature.SELF_QK)
    assert q_cached.dtype == torch.float16 and q_cached.device.type == "cpu"
    control = PreservationControl(
        SIGMAS, cond_roles={0: "edit"}, store=store, injections={"edit": Injection()}
    )
    q, k, _ = features(seed=1)
    torch.testing.assert_close(run_patch(q, k, v, options(control, 3.0)), out, atol=5e-3, rtol=5e-3)


def test_control_errors_name_the_problem():
    store = FeatureStore(dtype=torch.float32)
    q, k, v = features(seed=0)
    control = PreservationControl(
        SIGMAS, cond_roles={0: "edit"}, store=store, injections={"edit": Injection()}
    )
    with pytest.raises(ValueError, match="not a step of this run's schedule"):
        run_patch(q, k, v, options(control, 7.0))
    with pytest.raises(KeyError, match="no cached self_qk for step 0"):
        run_patch(q, k, v, options(control, 14.6))
    missing = PreservationControl(SIGMAS, injections={"cond": Injection(source="source")})
    with pytest.raises(ValueError, match="has 0 such chunks"):
        run_patch(q, k, v, options(missing, 14.6))
    with pytest.raises(ValueError, match="needs a FeatureStore"):
        PreservationControl(SIGMAS, capture="source")
    with pytest.raises(ValueError, match="both recorded and injected"):
        PreservationControl(SIGMAS, capture="cond", store=store, injections={"cond": Injection()})
    capture(store, seed=0, sigma=14.6)
    q_big, k_big, v_big = (torch.randn(FRAMES, H * W, 2 * INNER) for _ in range(3))
    with pytest.raises(ValueError, match="another clip size, resolution or model"):
        run_patch(q_big, k_big, v_big, options(control, 14.6))


def test_control_survives_deepcopy_as_itself():
    control = PreservationControl(SIGMAS)
    assert (
        copy.deepcopy({"transformer_options": {CONTROL_KEY: control}})["transformer_options"][CONTROL_KEY]
        is control
    )


TOKENS_SRC, TOKENS_EDIT = 5, 6


def cross_features(seed: int, chunks: int, tokens: int):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(chunks * FRAMES, H * W, INNER, generator=generator)
    k = torch.randn(chunks * FRAMES, tokens, INNER, generator=generator)
    v = torch.randn(chunks * FRAMES, tokens, INNER, generator=generator)
    return q, k, v


def maps(q, k):
    d = INNER // HEADS
    return torch.stack(
        [
            torch.stack(
                [
                    torch.softmax(q[i, :, h * d : (h + 1) * d] @ k[i, :, h * d : (h + 1) * d].T / d**0.5, -1)
                    for h in range(HEADS)
                ]
            )
            for i in range(q.shape[0])
        ]
    )


def apply_maps(probs, v):
    d = INNER // HEADS
    return torch.cat([probs[:, h] @ v[..., h * d : (h + 1) * d] for h in range(HEADS)], dim=-1)


def test_cross_maps_are_recorded_and_the_output_is_unchanged():
    store = FeatureStore(dtype=torch.float32)
    control = PreservationControl(SIGMAS, cond_roles={0: "source"}, capture="source", store=store)
    q, k, v = cross_features(0, chunks=1, tokens=TOKENS_SRC)
    out = CrossAttentionControl()(q, k, v, options(control, 3.0))
    (recorded,) = store.get(1, BLOCK, Feature.CROSS_MAPS)
    assert recorded.shape == (FRAMES, HEADS, H * W, TOKENS_SRC)
    torch.testing.assert_close(recorded, maps(q, k), **TOL)
    plain = torch.stack([attend(q[i], k[i], v[i], HEADS) for i in range(FRAMES)])
    torch.testing.assert_close(out, plain, **TOL)


def test_cross_maps_take_source_columns_for_mapped_tokens_only():
    store = FeatureStore(dtype=torch.float32)
    q_src, k_src, _ = cross_features(0, chunks=1, tokens=TOKENS_SRC)
    CrossAttentionControl()(
        q_src,
        k_src,
        k_src,
        options(PreservationControl(SIGMAS, cond_roles={0: "s"}, capture="s", store=store), 0.5),
    )
    token_map = torch.tensor([0, 1, -1, 2, 4, -1])  # edit tokens 2 and 5 are new words
    control = PreservationControl(
        SIGMAS, cond_roles={0: "edit"}, store=store, injections={"edit": Injection(token_map=token_map)}
    )
    q, k, v = cross_features(1, chunks=1, tokens=TOKENS_EDIT)
    got = CrossAttentionControl()(q, k, v, options(control, 0.5))
    own, source = maps(q, k), maps(q_src, k_src)
    mixed = own.clone()
    for j, i in enumerate(token_map.tolist()):
        if i >= 0:
            mixed[..., j] = source[..., i]
    torch.testing.assert_close(got, apply_maps(mixed, v), **TOL)


def test_cross_maps_from_the_source_chunk_and_previous_patch_kept():
    q, k, v = cross_features(2, chunks=2, tokens=TOKENS_SRC)
    token_map = torch.arange(TOKENS_SRC)
    control = PreservationControl(
        SIGMAS, injections={"edit": Injection(source="source", token_map=token_map)}
    )
    got = CrossAttentionControl()(
        q, k, v, options(control, 0.5, cond_or_uncond=(0, 0), roles=("source", "edit"))
    )
    probs = maps(q, k)
    probs[FRAMES:] = probs[:FRAMES]
    torch.testing.assert_close(got, apply_maps(probs, v), **TOL)

    def previous(q, k, v, extra_options):
        return torch.zeros_like(q)

    recorder = PreservationControl(SIGMAS, cond_roles={0: "s"}, capture="s", store=FeatureStore())
    patch = CrossAttentionControl(previous=previous)
    q1, k1, v1 = cross_features(3, chunks=1, tokens=TOKENS_SRC)
    assert torch.equal(patch(q1, k1, v1, options(recorder, 0.5)), torch.zeros_like(q1))
    assert torch.equal(patch(q1, k1, v1, options(None, 0.5)), torch.zeros_like(q1))
