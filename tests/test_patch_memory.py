"""A memory budget on one patched attention call at SD1.5's level-0 shapes (a 512 px frame: 64x64 latent
cells, 320 channels, 8 heads), measured with torch's memory profiler: what the patches allocate beyond the
plain attention's output must stay within their work budget plus one output-sized buffer, so a patch that
starts copying q and k again, or gathers whole windows, fails here."""

import torch
from comfyui_diffferv.attention.control import CONTROL_KEY, ROLES_KEY, Injection, PreservationControl
from comfyui_diffferv.attention.feature_store import Feature, FeatureStore
from comfyui_diffferv.attention.functional import sdpa_attention
from comfyui_diffferv.attention.memory import WORK_BYTES, patch_bytes
from comfyui_diffferv.attention.patches import CrossAttentionControl, TemporalSelfAttention
from comfyui_diffferv.flow.trajectory_set import TrajectorySet
from memory_probe import peak_bytes
from naive_attention import random_trajectories

FRAMES, CELLS, INNER, HEADS, ROLES = 2, 64, 320, 8, ("edit", "negative", "source")
ROWS, SIGMA = 3 * FRAMES, 3.0


def options(control) -> dict:
    return {
        "n_heads": HEADS,
        "activations_shape": [ROWS, INNER, CELLS, CELLS],
        "block": ("input", 1),
        "block_index": 0,
        "cond_or_uncond": [0, 1, 0],
        "sigmas": torch.full((ROWS,), SIGMA),
        ROLES_KEY: ROLES,
        CONTROL_KEY: control,
    }


def injecting() -> PreservationControl:
    """An appearance step of a recompute-mode edit: q/k and every map column from the source chunk."""
    inject = Injection(source="source", token_map=torch.arange(77))
    return PreservationControl(torch.tensor([SIGMA]), injections={"edit": inject, "negative": inject})


def test_patched_attention_stays_within_its_budget_at_level_0():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(ROWS, CELLS * CELLS, INNER, generator=generator) for _ in range(3))
    context_k, context_v = (torch.randn(ROWS, 77, INNER, generator=generator) for _ in range(2))
    grid = random_trajectories(FRAMES, CELLS, CELLS, keep=0.97, seed=0)
    self_attention = TemporalSelfAttention(
        trajectories=TrajectorySet(FRAMES, (512, 512), {(CELLS, CELLS): grid})
    )
    cross_attention = CrossAttentionControl()
    self_attention(q.clone(), k.clone(), v, options(injecting()))  # builds its trajectory groups once
    output = q.numel() * q.element_size()  # what the plain attention returns: counted by ComfyUI already
    bound = WORK_BYTES + 2 * output

    plain, _ = peak_bytes(lambda: sdpa_attention(q, k, v, HEADS))
    patched, _ = peak_bytes(lambda: self_attention(q.clone(), k.clone(), v, options(injecting())))
    copies = 2 * output  # the two clones this test hands in (ComfyUI's fresh q and k)
    assert patched - copies - plain <= bound, (patched - copies - plain) / 2**20

    plain, _ = peak_bytes(lambda: sdpa_attention(q, context_k, context_v, HEADS))
    patched, _ = peak_bytes(lambda: cross_attention(q, context_k, context_v, options(injecting())))
    assert patched - plain <= bound, (patched - plain) / 2**20

    store = FeatureStore()
    record = PreservationControl(
        torch.tensor([SIGMA]), cond_roles={0: "source"}, capture="source", store=store
    )
    one = {**options(record), ROLES_KEY: ("source",), "sigmas": torch.full((FRAMES,), SIGMA)}
    rows = slice(0, FRAMES)
    plain, _ = peak_bytes(lambda: sdpa_attention(q[rows], context_k[rows], context_v[rows], HEADS))
    recorded, _ = peak_bytes(lambda: cross_attention(q[rows], context_k[rows], context_v[rows], one))
    (maps,) = store.get(0, ("input", 1, 0), Feature.CROSS_MAPS)
    kept = maps.numel() * maps.element_size()  # the recorded maps themselves (the store keeps them)
    assert recorded - kept - plain <= bound, (recorded - kept - plain) / 2**20


def test_what_the_patches_allocate_is_within_what_comfyui_is_told():
    """One patched self-attention call (SWCFA over windows of 3 and TTA) of 8 frames x 3 chunks at a
    budget of 24 MiB, so both stages compute in several pieces: the bytes it allocates beyond the plain
    attention, measured with torch's memory profiler, stay within `patch_bytes` at that budget, the extra
    ComfyUI's estimate is told (``nodes/memory_glue.py``)."""
    frames, cells, budget = 8, 32, 24 * 2**20
    rows = 3 * frames
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(rows, cells * cells, INNER, generator=generator) for _ in range(3))
    grid = random_trajectories(frames, cells, cells, keep=0.97, seed=1)
    attention = TemporalSelfAttention(
        trajectories=TrajectorySet(frames, (256, 256), {(cells, cells): grid}), max_bytes=budget
    )
    call = {
        **options(None),
        "activations_shape": [rows, INNER, cells, cells],
        "cond_or_uncond": [0, 1, 0],
        "sigmas": torch.full((rows,), SIGMA),
    }
    del call[CONTROL_KEY]
    attention(q.clone(), k.clone(), v, call)  # builds its trajectory groups once
    plain, _ = peak_bytes(lambda: sdpa_attention(q, k, v, HEADS))
    patched, _ = peak_bytes(lambda: attention(q.clone(), k.clone(), v, call))
    copies = 2 * q.numel() * q.element_size()  # the two clones this test hands in (ComfyUI's fresh q and k)
    extra = patched - copies - plain
    told = patch_bytes(frames, (cells, cells), q.element_size(), False, chunks=3, window=3, budget=budget)
    print(
        f"\npatched self-attention: {extra / 2**20:.1f} MiB beyond the plain call, ComfyUI told {told / 2**20:.1f} MiB"
    )
    assert 0 < extra <= told
