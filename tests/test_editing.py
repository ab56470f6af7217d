"""DDIMInvertWithCache + PreservationInjectSampler inside a real ComfyUI, on the demo clip's frames, with
a tiny random-weight SD1.5-shaped model (see comfy_harness.build_unet for its output scale)."""

import sys
from dataclasses import replace

import pytest
import torch
from comfy_harness import (
    Clip,
    build_unet,
    core_windows,
    encode_clip,
    free_memory_for,
    load_video,
    rows_per_step,
    sample,
    schema_defaults,
)
from comfy_harness import invert as invert_clip
from comfyui_diffferv.editing.inputs import GUIDANCE
from comfyui_diffferv.editing.token_alignment import align_tokens
from comfyui_diffferv.windows.frames import call_frames

STEPS = 10
SOURCE = "a photo of a woman"
FRAMES = 6


@pytest.fixture(scope="module")
def clip(comfy, tiny_sd15, input_clip) -> Clip:
    """The demo clip's first FRAMES frames, edited by a plain (no temporal attention) tiny UNet."""
    return encode_clip(
        comfy, load_video(comfy, input_clip, FRAMES), tiny_sd15, build_unet(seed=5, output_scale=0.02)
    )


def invert(comfy, clip: Clip, mode: str, steps: int = STEPS, **overrides):
    """The clip inverted with the source prompt: (INVERSION, noise [F, 4, h, w])."""
    return invert_clip(comfy, clip, SOURCE, cache_mode=mode, steps=steps, **overrides)


def edit(comfy, clip: Clip, inversion, prompt=SOURCE, **overrides) -> torch.Tensor:
    """The sampler's latent [F, 4, h, w] from `inversion` with `prompt` (default: the source prompt)."""
    return sample(comfy, clip, inversion, prompt, **overrides)


PLAIN = {"tau_app": 0.0, "inject_motion": False, "inject_semantic": False}


@pytest.fixture(scope="module")
def stored(comfy, clip):
    return invert(comfy, clip, "store")


@pytest.fixture(scope="module")
def recomputed(comfy, clip):
    return invert(comfy, clip, "recompute")


def error(latent: torch.Tensor, clip: Clip) -> float:
    return float((latent - clip.latent["samples"]).abs().mean())


def test_both_modes_invert_to_the_same_noise_and_keep_what_they_promise(clip, stored, recomputed):
    (store, store_noise), (recompute, recompute_noise) = stored, recomputed
    # the inversion itself is the same (store computes the cross-attention maps explicitly: rounding only)
    assert torch.allclose(store_noise, recompute_noise, atol=1e-4)
    assert store.mode == "store" and recompute.mode == "recompute"
    assert store.latents.shape == (STEPS + 1, FRAMES, 4, 8, 8)
    assert recompute.store is None and len(store.store) > 0
    # every sigma the sampler evaluates has its features: 16 self- and 16 cross-attention blocks
    steps = {step for step, _, _ in store.store.recorded()}
    assert set(range(1, STEPS + 1)) <= steps
    assert len(store.store.recorded()) == (STEPS + 1) * 32
    moved = (store_noise - clip.latent["samples"]).abs().mean()
    assert moved > 0.2 * clip.latent["samples"].abs().mean()  # the inversion moved away from the clip


def test_reconstruction_injection_beats_plain_ddim(comfy, clip, recomputed):
    """Edit prompt = source prompt at guidance 5: the preservation features bring the clip back closer
    than plain DDIM inversion + sampling."""
    inversion, _ = recomputed
    injected = error(edit(comfy, clip, inversion), clip)
    plain = error(edit(comfy, clip, inversion, **PLAIN), clip)
    signal = float(clip.latent["samples"].abs().mean())
    print(
        f"\nreconstruction mean abs error: plain DDIM {plain:.4f}, with injection {injected:.4f} (|latent| {signal:.4f})"
    )
    assert injected < plain
    assert injected < 0.5 * signal


def test_cache_modes_give_the_same_frames(comfy, clip, stored, recomputed, tiny_sd15):
    prompt = "a photo of an old woman with glasses"
    store = edit(comfy, clip, stored[0], prompt)
    recompute = edit(comfy, clip, recomputed[0], prompt)
    difference = float((store - recompute).abs().max())
    print(f"\nstore vs recompute: max abs latent difference {difference:.2e}")
    assert difference < 2e-3  # fp16 storage of q, k and maps vs recomputed fp32
    with torch.inference_mode():
        frames = [tiny_sd15.vae.decode(x) for x in (store, recompute)]
    assert float((frames[0] - frames[1]).abs().max()) < 2.0 / 255


def test_no_injection_is_plain_ddim_sampling_as_the_core_sampler_does_it(comfy, clip, recomputed):
    """tau_app 0 with motion and semantic injection off: exactly ComfyUI's own DDIM (KSamplerAdvanced,
    no added noise) from the inverted noise, with the same temporally patched model."""
    inversion, noise = recomputed
    ours = edit(comfy, clip, inversion, **PLAIN)
    patched = "DiffFERV_ApplyTemporalAttention"
    (model,), _ = comfy.run_node(
        patched, **schema_defaults(comfy, patched), model=clip.model, trajectories=clip.trajectories
    )
    (cond,), _ = comfy.run_node("CLIPTextEncode", clip=clip.clip, text=SOURCE)
    (core,), _ = comfy.run_node(
        "KSamplerAdvanced",
        model=model,
        add_noise="disable",
        noise_seed=0,
        steps=STEPS,
        cfg=GUIDANCE.default,
        sampler_name="ddim",
        scheduler="ddim_uniform",
        positive=cond,
        negative=cond,
        latent_image={"samples": noise},
        start_at_step=0,
        end_at_step=10000,
        return_with_leftover_noise="disable",
    )
    assert torch.allclose(ours, core["samples"], atol=1e-4, rtol=1e-4)


def test_an_added_word_changes_the_output(comfy, clip, recomputed):
    inversion, _ = recomputed
    same = edit(comfy, clip, inversion)
    edited = edit(comfy, clip, inversion, "a photo of an old woman with glasses")
    assert float((edited - same).abs().mean()) > 0.05 * float(same.abs().mean())


def test_source_only_tokens_take_every_map_from_the_source(comfy, clip, recomputed):
    """An edit prompt made only of source tokens (a word dropped) maps every column, padding included,
    to a source column (the control's replacement of mapped columns is tested in
    test_preservation_control.py); in the sampler that replacement is live."""
    inversion, _ = recomputed
    prompt = "a photo of woman"
    tokens = [token for token, _ in clip.clip.tokenize(prompt)["l"][0]]
    assert (align_tokens(inversion.source_tokens, tokens) >= 0).all()
    with_maps = edit(comfy, clip, inversion, prompt)
    without = edit(comfy, clip, inversion, prompt, inject_semantic=False)
    print(
        f"\nsource-only prompt, error with source maps {error(with_maps, clip):.4f}, without {error(without, clip):.4f}"
    )
    assert not torch.allclose(with_maps, without)


def test_progress_bar_and_interruption(comfy, clip):
    import comfy.model_management as model_management
    import comfy.utils as comfy_utils

    updates = []
    previous = comfy_utils.PROGRESS_BAR_HOOK
    comfy_utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: updates.append((value, total))
    )
    try:
        invert(comfy, clip, "recompute", steps=3)
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)
    assert [value for value, _ in updates][-1] == 3 and {total for _, total in updates} == {3}
    model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(model_management.InterruptProcessingException):
            invert(comfy, clip, "recompute", steps=3)
    finally:
        model_management.interrupt_current_processing(False)


def test_mismatched_inputs_are_clear_errors(comfy, clip, recomputed, tiny_sd15):
    inversion, _ = recomputed
    short = {"samples": clip.latent["samples"][:4]}
    with pytest.raises(ValueError, match="trajectories: computed from 6 frames, but the latent holds 4"):
        invert(comfy, clip, "recompute", latent=short)
    (small,), _ = comfy.run_node("VAEEncode", pixels=torch.rand(FRAMES, 128, 64, 3), vae=tiny_sd15.vae)
    with pytest.raises(ValueError, match="trajectories: computed on 64x64 frames"):
        invert(comfy, clip, "recompute", latent=small)
    with pytest.raises(ValueError, match="latent: holds 1 frame"):
        invert(comfy, clip, "recompute", latent={"samples": clip.latent["samples"][:1]})
    with pytest.raises(ValueError, match="edit_prompt is 80 tokens long"):
        edit(comfy, clip, inversion, " ".join(["woman"] * 80))


MEMORY_CASES = (
    "store",
    "recompute",
    "recompute split",
    "identity UNet",
    "context windows",
    "core windows with anchor",
    "mask",
    "speed mode",
)


def memory_case(comfy, clip: Clip, case: str, monkeypatch) -> tuple[Clip, dict, dict, list]:
    """The clip, inversion inputs, sampler inputs and UNets (ModelPatchers) of one `MEMORY_CASES` run."""
    mode = "store" if case == "store" else "recompute"
    inverting, editing, models = {"mode": mode}, {}, [clip.model]
    if case == "recompute split":
        free_memory_for(monkeypatch, clip.model, FRAMES, clip.latent["samples"])  # one chunk per call
    elif case == "identity UNet":
        identity = build_unet(seed=9, output_scale=0.02)
        inverting["model"], models = identity, [clip.model, identity]
    elif case == "context windows":
        (windowed,), _ = comfy.run_node(
            "DiffFERV_ContextWindows",
            model=clip.model,
            context_length=4,
            context_overlap=1,
            fuse_method="pyramid",
        )
        inverting["model"] = editing["model"] = windowed
    elif case == "core windows with anchor":  # newer ComfyUI: each window runs with the frame before it
        windowed = core_windows(comfy, clip.model, "standard_static", 4, 1, anchor=True)
        inverting["model"] = editing["model"] = windowed
    elif case == "mask":
        mask = torch.zeros(1, *clip.frames.shape[1:3])
        mask[:, : mask.shape[1] // 2] = 1.0
        editing["mask"] = mask
    elif case == "speed mode":
        (images, _), _ = comfy.run_node("DiffFERV_SelectKeyframes", frames=clip.frames, keyframe_every=2)
        node = "DiffFERV_ComputeFlowTrajectories"
        (trajectories, _), _ = comfy.run_node(node, **schema_defaults(comfy, node), frames=images)
        latent = {"samples": clip.latent["samples"][[0, 2, 4, 5]]}  # the keyframes' latents
        clip = replace(clip, frames=images, trajectories=trajectories, latent=latent)
    return clip, inverting, editing, models


@pytest.mark.parametrize("case", MEMORY_CASES)
def test_comfy_sizes_memory_for_the_rows_the_unet_really_runs(comfy, clip, case, monkeypatch):
    """ComfyUI's loader is given an estimate (``estimate_memory``'s noise shape) that covers every UNet call
    of the run, in every mode: its rows (the recompute mode's source chunk included), the patches' working
    memory, and the one-step store of the source path held on the device when it runs in a call of its
    own (the identity UNet; the sampler's own UNet under a cond/uncond split); and its minimum (what a
    partial load of the weights leaves free) covers the call a split comes down to, one chunk of a window
    with what the run holds on the device."""
    import comfy.sampler_helpers as helpers
    from comfyui_diffferv.attention.control import CONTROL_KEY
    from comfyui_diffferv.attention.memory import patch_bytes
    from comfyui_diffferv.nodes.attention_patches import swcfa_window

    run, inverting, editing, models = memory_case(comfy, clip, case, monkeypatch)
    estimated, ran = [], []
    original = helpers.estimate_memory

    def spy(model, noise_shape, conds):
        estimated.append((model, list(noise_shape)))
        return original(model, noise_shape, conds)

    def after_call(module, args, kwargs, output):
        """(rows, frames per chunk, features from a host store, bytes held on the device) of one call."""
        options = kwargs["transformer_options"]
        control = options.get(CONTROL_KEY)
        store = None if control is None else control.store
        on_host = store is not None and store.device is not None
        cached = on_host and any(i.source is None for i in control.injections.values())
        held = 0 if store is None or on_host else store.nbytes  # after the call: what it recorded
        window = call_frames(options)
        frames = run.latent["samples"].shape[0] if window is None else len(window)
        ran.append((int(args[0].shape[0]), frames, cached, held))

    monkeypatch.setattr(helpers, "estimate_memory", spy)
    hooks = [
        model.model.diffusion_model.register_forward_hook(after_call, with_kwargs=True) for model in models
    ]
    try:
        inversion, _ = invert(comfy, run, steps=3, **inverting)
        inversion_calls, estimated_inversion = list(ran), estimated[-1]
        ran.clear()
        edit(comfy, run, inversion, **editing)
        edit_calls, estimated_edit = list(ran), estimated[-1]
    finally:
        for hook in hooks:
            hook.remove()
    for what, (model, shape), calls in (
        ("inversion", estimated_inversion, inversion_calls),
        ("edit", estimated_edit, edit_calls),
    ):
        base, window, element_size = model.model, swcfa_window(model), model.model_dtype().itemsize
        estimate = base.memory_required([2 * shape[0], *shape[1:]])  # what estimate_memory asks for
        minimum = base.memory_required(shape)  # and as the minimum

        def need(
            rows, frames, cached, held, base=base, shape=shape, element_size=element_size, window=window
        ):
            patches = patch_bytes(frames, tuple(shape[-2:]), element_size, cached, rows // frames, window)
            return base.memory_required([rows, *shape[1:]]) + patches + held

        real = max(need(*call) for call in calls)
        # the call a split comes down to: one chunk of a window, with what the run held on the device
        smallest = max(need(frames, frames, cached, held) for _, frames, cached, held in calls)
        rows = max(rows for rows, *_ in calls)
        held = max(held for *_, held in calls)
        print(
            f"\n{case}, {what}: ComfyUI sized {2 * shape[0]} rows ({estimate / 2**20:.1f} MiB), the UNet ran "
            f"{rows} rows at most, {real / 2**20:.1f} MiB with the patches' work and {held / 2**20:.2f} MiB held"
        )
        print(
            f"  minimum {minimum / 2**20:.1f} MiB, a call split down to one chunk {smallest / 2**20:.1f} MiB"
        )
        assert 2 * shape[0] >= rows and estimate >= real, (case, what, shape, calls)
        assert minimum >= smallest, (case, what, shape, calls)
    if case == "recompute split":
        assert max(held for *_, held in edit_calls) > 0  # the one-step store was held, and counted


@pytest.fixture(scope="module")
def short(comfy, clip):
    """Both cache modes' inversions of the clip in 3 steps."""
    return {mode: invert(comfy, clip, mode, steps=3)[0] for mode in ("store", "recompute")}


@pytest.mark.parametrize("mode", ["recompute", "store"])
def test_a_low_vram_split_gives_the_same_frames_and_runs_the_source_once_per_step(
    comfy, clip, short, mode, monkeypatch
):
    """ComfyUI's free memory made to fit 2 chunks of the clip's frames, then 1 (the cond/uncond split of
    a low-VRAM GPU): the frames stay those of the unsplit run, and every step runs the source path once:
    recompute mode's source chunk alone first when the edit's chunks and it do not fit one call."""
    inversion, latent = short[mode], clip.latent["samples"]
    runs = {}
    for fits in (3, 2, 1) if mode == "recompute" else (2, 1):  # chunks of FRAMES rows that fit one call
        with monkeypatch.context() as patch, rows_per_step(clip.model) as steps:
            if fits < 3:
                free_memory_for(patch, clip.model, fits * FRAMES, latent)
            runs[fits] = edit(comfy, clip, inversion, "a photo of an old woman"), list(steps.values())
        print(f"\n{mode}, {fits} chunks fit: UNet rows per step {runs[fits][1]}")
    unsplit, unsplit_rows = runs[max(runs)]
    differences = {fits: float((frames - unsplit).abs().max()) for fits, (frames, _) in runs.items()}
    print(f"{mode}: max abs latent difference to the unsplit run, by chunks that fit: {differences}")
    assert unsplit_rows == [[FRAMES * (3 if mode == "recompute" else 2)]] * 3
    assert max(differences.values()) < 1e-5
    source = [FRAMES] if mode == "recompute" else []
    for fits, (_, rows) in runs.items():
        if fits == 2 and mode == "recompute":
            assert rows == [[*source, 2 * FRAMES]] * 3
        elif fits == 1:
            assert rows == [[*source, FRAMES, FRAMES]] * 3


def test_the_controls_take_each_step_from_the_loop_not_from_the_device(comfy, clip, monkeypatch):
    """Every UNet call of an inversion and an edit, in both cache modes, with the recompute mode's source
    chunk in the batch and alone first (a low-VRAM split): the control keys it by the sigma the DDIM loop
    told the run's clock, never by reading the call's sigmas back from the device (a host-device sync
    inside the UNet call on a GPU)."""
    told = []

    def telling(own):
        def step_now(self, sigmas):
            told.append(self.clock is not None and self.clock.sigma is not None)
            return own(self, sigmas)

        return step_now

    for name, module in list(sys.modules.items()):  # ComfyUI imports the pack under its own name too
        if name.endswith(".attention.control"):
            control = module.PreservationControl
            monkeypatch.setattr(control, "step_now", telling(control.step_now))
    for mode in ("store", "recompute"):
        inversion = invert(comfy, clip, mode, steps=2)[0]
        for fits in (3, 1):
            with monkeypatch.context() as patch:
                if fits < 3:
                    free_memory_for(patch, clip.model, fits * FRAMES, clip.latent["samples"])
                edit(comfy, clip, inversion, "a photo of an old woman")
    assert len(told) > 8 and all(told), told


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("mode", ["store", "recompute"])
def test_the_edit_in_half_precision_stays_close_to_fp32(comfy, clip, mode, dtype):
    """The whole inversion + edit with the UNet in fp16 / bf16 (the store in the UNet's dtype): no dtype
    error, finite, and within half precision's rounding of the fp32 run (bf16 has 8 mantissa bits)."""
    edits = {}
    for run_dtype in (torch.float32, dtype):
        model = build_unet(seed=5, output_scale=0.02, dtype=run_dtype)
        run = replace(clip, model=model)
        inversion, _ = invert(comfy, run, mode, steps=4)
        if mode == "store":
            assert {
                t.dtype for items in inversion.store._items.values() for ts in items.values() for t in ts
            } == {run_dtype}
        edits[run_dtype] = edit(comfy, run, inversion, "a photo of an old woman").float()
    half, full = edits[dtype], edits[torch.float32]
    assert torch.isfinite(half).all()
    difference = float((half - full).abs().mean()) / float(full.abs().mean())
    print(f"\n{mode} {dtype}: mean |half - fp32| / mean |fp32| = {difference:.4f}")
    assert difference < (0.02 if dtype == torch.float16 else 0.08)


def test_an_explicit_store_the_host_cannot_hold_is_refused_before_the_inversion(comfy, clip, monkeypatch):
    """cache_mode store on a host whose available memory (ComfyUI's reading) is below the store's cache:
    one sentence naming recompute and both sizes, before any UNet call."""
    import comfy.model_management as mm

    def one_mib(device=None, torch_free_too=False):
        return (2**20, 2**20) if torch_free_too else 2**20

    calls = []
    hook = clip.model.model.diffusion_model.register_forward_hook(lambda *_: calls.append(1))
    monkeypatch.setattr(mm, "get_free_memory", one_mib)
    try:
        with pytest.raises(Exception, match=r"cache_mode store: its cache of features needs about") as caught:
            invert(comfy, clip, "store")
    finally:
        hook.remove()
    print(f"\n{caught.value}")
    assert "and 0.0 GiB is available: use recompute (it keeps" in str(caught.value) and not calls
