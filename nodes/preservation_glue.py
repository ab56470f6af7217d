"""ComfyUI glue shared by DDIMInvertWithCache and PreservationInjectSampler: prompts, checks, the
temporal attention, the schedule, the cache mode, the recompute mode's source path, and the identity
model (``editing/identity.py``).

The recompute mode gives every UNet call of the edit the source path of its step (the inverted latent
of the step, the source prompt) through ComfyUI's model-function wrapper (`add_source_path`), in one of
two ways:

- in the batch (the fastest): ComfyUI builds the edit batch (cond and uncond chunks) as usual, the
  wrapper appends one chunk of F frames, labels the chunks' roles for the attention patches, runs the
  UNet and returns the edit chunks' output. An earlier wrapper (another node's) is called with the
  extended batch, so it keeps working.
- alone first (`SourceRunner`): a UNet runs the source chunk in a call of its own, its features recorded
  into a store on the device that holds that one step, once per step (and context window); the step's
  edit calls then inject from that store. The identity model, when it is another UNet than the
  sampler's, always runs this way (ComfyUI loads it with the edit model, ``set_additional_models``). The
  sampler's own UNet runs this way when ComfyUI splits the step's chunks into several calls (a low-VRAM
  GPU: cond and uncond one at a time), or when the edit's chunks and the source chunk would not fit one
  call by ComfyUI's own rule (``memory_required`` and the patches' work x 1.5 < free memory), checked
  once per step (and window) by a ``CALC_COND_BATCH`` wrapper before the UNet runs. That wrapper runs the
  source chunk right away, before ComfyUI decides from its free memory how to split the edit's chunks,
  so that decision sees the store held; it also works out the step's source input once, so no UNet call
  waits on the device for it. So the source path runs once per step and no call is larger than ComfyUI
  sized it (the store is in its estimate: ``memory_glue.py``).

Under context windows (``window_glue.py``) each call holds one window's frames, and so does the source
chunk: the inverted latents of those frames.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import latent_preview
import torch

from ..attention.control import CONTROL_KEY, ROLES_KEY, PreservationControl, SigmaClock
from ..attention.feature_store import Feature, FeatureStore
from ..attention.memory import COMFY_HEADROOM, UNetCall, patch_bytes
from ..editing.ddim import inversion_sigmas
from ..editing.identity import FROM_STORE, layout_problem, source_path
from ..editing.injection_plan import ROLE_OF_COND, SOURCE_ROLE, InjectionPlan, plan_injection
from ..editing.inputs import prompt_problem
from ..editing.preservation import (
    STORE,
    InversionResult,
    recompute_bytes,
    resolve_cache_mode,
    store_bytes,
    store_problem,
)
from ..editing.token_alignment import token_id
from ..windows.frames import CONTEXT_WINDOW_KEY, call_frames, describe
from ..windows.schedule import frame_evaluations
from .attention_patches import (
    apply_temporal_attention,
    attention_layout,
    keep_trajectory_groups,
    patched_blocks,
    swcfa_window,
    with_control,
)
from .memory_glue import count_real_rows
from .window_glue import schedule_name, steady_windows, windows_of

IDENTITY_MODELS_KEY = "diffferv_identity"
"""Key of the identity UNet among the edit model's additional models (loaded with it by ComfyUI)."""
STEP_PLAN_KEY = "diffferv_source_plan"
"""Key of the recompute mode's CALC_COND_BATCH wrapper (`add_source_path`)."""


def encode_prompt(clip, text: str, what: str) -> tuple[list, list[int]]:
    """CONDITIONING and token ids of a prompt (one CLIP chunk of 77 tokens: token alignment between
    prompts needs equal lengths)."""
    if clip is None:
        raise ValueError(f"{what}: no CLIP connected; connect the CLIP of the checkpoint loader")
    tokens = clip.tokenize(text)
    chunks = [[token_id(token) for token, *_ in chunk] for chunk in tokens.get("l", [])]
    problem = prompt_problem(what, text, chunks)
    if problem:
        raise ValueError(problem)
    ids = chunks[0]
    return clip.encode_from_tokens_scheduled(tokens), ids


def identity_path(model, inversion: InversionResult) -> str:
    """How the sampler's MODEL gets the source features of `inversion`, whose MODEL (the identity model)
    may be another UNet (``editing/identity.py``): checks that the two fit (attention layout, noise
    schedule, DiffFERV-patched blocks) and returns IN_BATCH, SEPARATE or FROM_STORE."""
    identity = inversion.identity
    problem = layout_problem(attention_layout(model), attention_layout(identity))
    if problem:
        raise ValueError(problem)
    sigmas = [m.get_model_object("model_sampling").sigmas.float().cpu() for m in (model, identity)]
    if sigmas[0].shape != sigmas[1].shape or not torch.allclose(*sigmas, rtol=1e-4):
        raise ValueError(
            "model: its noise schedule differs from the inversion's model's (the identity model's): both must "
            "be SD1.5 models with the same schedule (no ModelSamplingDiscrete changes on one of them)"
        )
    unpatched = sorted(set(patched_blocks(model)["attn1"]) - set(patched_blocks(identity)["attn1"]))
    if unpatched:
        raise ValueError(
            f"model: DiffFERV temporal attention runs on self-attention blocks {unpatched} that the "
            "inversion's model (the identity model) leaves plain, so they have no features to take: give "
            "both models the same Apply Temporal Attention (DiffFERV) resolutions"
        )
    same_weights = model.patches_uuid == identity.patches_uuid or not (model.patches or identity.patches)
    return source_path(model.model is identity.model, same_weights, inversion.store is not None)


def temporal_model(model, trajectories):
    """`model` if it already carries DiffFERV temporal attention (Apply Temporal Attention), else a clone
    with it at the default settings (window 3, SWCFA and TTA at every resolution); its trajectory-group
    cache sized for the context windows of a step over the clip of `trajectories`."""
    if not patched_blocks(model)["attn2"]:
        model = apply_temporal_attention(model, trajectories)
    keep_trajectory_groups(model, len(set(windows_of(model, trajectories.frames))))
    return model


def schedule(model, steps: int) -> torch.Tensor:
    """The inversion schedule [steps + 1] (low -> high) of DDIM's uniform timesteps (1, 1 + 1000/steps,
    ...): the schedule ComfyUI's "ddim_uniform" scheduler samples, reversed."""
    sampling = comfy.samplers.calculate_sigmas(
        model.get_model_object("model_sampling"), "ddim_uniform", steps
    )
    return inversion_sigmas(sampling.cpu().to(torch.float32))


def pick_cache_mode(model, mode: str, frames: int, steps: int, latent_hw: tuple[int, int]) -> tuple[str, str]:
    """The cache mode an inversion of `frames` frames with `model` (its context windows included) uses,
    and a line describing both modes' cache sizes. "auto" resolves by `resolve_cache_mode` against the
    free system memory; "store" is refused when the windows change from step to step, or when its cache
    would not fit the available system memory (`store_problem`)."""
    channels = int(model.get_model_object("diffusion_model").model_channels)
    evaluated = frame_evaluations(windows_of(model, frames))
    steady = steady_windows(model, frames)
    need = store_bytes(evaluated, steps, latent_hw, channels, model.model_dtype().itemsize)
    free = comfy.model_management.get_free_memory(torch.device("cpu"))
    kept = recompute_bytes(frames, steps, latent_hw)
    problem = store_problem("cache_mode", need, free, kept) if mode == STORE else None
    if problem:
        raise ValueError(problem)
    resolved = resolve_cache_mode(mode, need, free, steady)
    if resolved == STORE and not steady:
        raise ValueError(
            f"cache_mode store: the context schedule {schedule_name(model)} moves its windows from step to "
            "step, and the store cache holds features per window: use the schedule standard_static or batched "
            "(Context Windows (DiffFERV) uses standard_static), or cache_mode recompute"
        )
    mib = 2**20
    sizes = f"store {need / mib:.0f} MiB, recompute {kept / mib:.1f} MiB"
    return resolved, sizes


def run_sampler(
    model,
    sample_fn,
    options: dict,
    guidance: float,
    sigmas,
    positive,
    negative,
    latent: torch.Tensor,
    steps: int,
) -> torch.Tensor:
    """ComfyUI's custom sampling of `latent` [F, 4, h, w] (the start itself: no noise is added) over
    `sigmas` with `sample_fn` (a sampler function of ``editing/ddim.py``, given `options` as its extra
    options), `positive` / `negative` CONDITIONING at `guidance`: what both DDIM nodes run. A latent preview
    follows the `steps`; ComfyUI's own progress bar is off (the nodes report through `options`). Returns
    the final latent [F, 4, h, w]."""
    return comfy.sample.sample_custom(
        model,
        torch.zeros_like(latent),
        guidance,
        comfy.samplers.KSAMPLER(sample_fn, extra_options=options),
        sigmas,
        positive,
        negative,
        latent,
        callback=latent_preview.prepare_callback(model, steps),
        disable_pbar=True,
        seed=0,
    )


def recording_model(model, sigmas: torch.Tensor, mode: str, clock: SigmaClock):
    """The inversion's MODEL: in the store mode a clone that records the source chunk's features into a new
    FeatureStore, at the steps `clock` is told; ComfyUI counts its calls as one chunk. Returns (model,
    store or None)."""
    store = FeatureStore() if mode == STORE else None
    if store is not None:
        control = PreservationControl(
            sigmas, cond_roles={0: SOURCE_ROLE}, capture=SOURCE_ROLE, store=store, clock=clock
        )
        model = with_control(model, control)
    return count_real_rows(model, UNetCall(chunks=1)), store


def sampling_plan(
    model,
    inversion: InversionResult,
    tau_app: float,
    motion: bool,
    semantic: bool,
    edit: list,
    negative: list,
) -> InjectionPlan:
    """`plan_injection` for this sampler run: the inversion's steps as `model`'s timesteps, the prompts'
    tokens (`edit`, `negative`), the identity model's source path and the one-step store's bytes per frame."""
    unet = model.get_model_object("diffusion_model")
    latent = tuple(inversion.latents.shape[-2:])
    held = store_bytes(1, 0, latent, unet.model_channels, model.model_dtype().itemsize)
    timesteps = model.get_model_object("model_sampling").timestep(inversion.sigmas)
    path = identity_path(model, inversion)
    return plan_injection(
        timesteps, tau_app, motion, semantic, inversion.source_tokens, edit, negative, path, held
    )


def injecting_model(model, inversion: InversionResult, plan: InjectionPlan, clock: SigmaClock):
    """The sampler's MODEL for `plan`: a clone whose preservation control injects the source features,
    from the inversion's store or from the source path the recompute mode adds (in the batch, or alone
    first into a one-step store), at the steps `clock` is told, counted by ComfyUI by every kind of call
    the plan may make."""

    def control(roles: dict, store: FeatureStore | None) -> PreservationControl:
        return PreservationControl(
            inversion.sigmas, cond_roles=ROLE_OF_COND, store=store, injections=roles, clock=clock
        )

    if plan.roles and plan.path == FROM_STORE:
        model = with_control(model, control(plan.roles, inversion.store))
    elif plan.roles:
        from_store = control(plan.roles, FeatureStore(dtype=None, device=None))
        in_batch = None if plan.in_batch_roles is None else control(plan.in_batch_roles, None)
        model = with_control(model, in_batch or from_store)
        add_source_path(model, inversion, from_store, plan.features, in_batch)
    return count_real_rows(model, *plan.calls)


class SourceInput(NamedTuple):
    """The source path of one model call: the call's step, its input (the inverted latent of the step for
    the call's frames) [F, 4, h, w] on the batch's device and dtype, its context [F, 77, 768] (the
    source prompt), and the call's context window object (None: the whole clip)."""

    step: int
    x: torch.Tensor
    context: torch.Tensor
    window: object


def _source_path_input(
    inversion: InversionResult,
    control: PreservationControl,
    x: torch.Tensor,
    timestep: torch.Tensor,
    options: dict,
) -> SourceInput:
    """The SourceInput of one model call (or of a step's calls, before they run) of input `x` [B, 4, h, w]
    at `timestep` [B] with transformer options `options` (their context window)."""
    step = control.step_now(timestep)
    window = call_frames(options)
    source_x = inversion.latents[step] if window is None else inversion.latents[step, list(window)]
    frames = source_x.shape[0]
    if x.shape[0] % frames:
        raise ValueError(
            f"cache mode recompute: the UNet batch of {x.shape[0]} frames is not made of chunks of the "
            f"{frames} frames of {describe(window)}: the latent must be the inverted clip"
        )
    source_context = inversion.source_cond[0][0].to(device=x.device, dtype=x.dtype)
    return SourceInput(
        step,
        source_x.to(device=x.device, dtype=x.dtype),
        source_context.expand(frames, -1, -1),
        options.get(CONTEXT_WINDOW_KEY),
    )


def _in_batch(previous, apply_model, args: dict, source_x: torch.Tensor, source_context: torch.Tensor):
    """Run the UNet call `args` with one more chunk, the source path `source_x` [F, 4, h, w] with its
    context [F, 77, 768] and role SOURCE_ROLE; returns the output of the call's own chunks."""
    x, timestep, c = args["input"], args["timestep"], dict(args["c"])
    frames = source_x.shape[0]
    c["c_crossattn"] = torch.cat([c["c_crossattn"], source_context])
    options = dict(c["transformer_options"])
    chunks = list(options["cond_or_uncond"])
    options[ROLES_KEY] = (*(ROLE_OF_COND.get(int(chunk)) for chunk in chunks), SOURCE_ROLE)
    options["cond_or_uncond"] = [*chunks, 0]
    c["transformer_options"] = options
    extended = {
        **args,
        "input": torch.cat([x, source_x]),
        "timestep": torch.cat([timestep, timestep[:frames]]),
        "c": c,
        "cond_or_uncond": options["cond_or_uncond"],
    }
    return _call(previous, apply_model, extended)[: x.shape[0]]


class SourceRunner:
    """Runs the source path of a step alone, one chunk of F frames, recording `features` into `store`
    (on the UNet's device, in its dtype), which then holds that step (and context window) only; at most
    once per step and window, however many calls the step's chunks are split into. The UNet is
    `identity` (the identity model's ModelPatcher, with its own patches) or, when None, the sampler's own:
    the call's `apply_model` with the call's transformer options (its patches), through the earlier
    model-function wrapper if any. `clock`: the run's SigmaClock, which the recording reads its step from.

    Memory: the store holds one UNet pass of features of one chunk: per frame at 512x512 about
    ``store_bytes(1, 0, (64, 64))`` in fp16 (x2 in fp32)."""

    def __init__(
        self,
        inversion: InversionResult,
        store: FeatureStore,
        features: Collection[Feature],
        identity=None,
        clock: SigmaClock | None = None,
    ):
        self.identity = identity
        self.store = store
        self.capture = PreservationControl(
            inversion.sigmas,
            cond_roles={0: SOURCE_ROLE},
            capture=SOURCE_ROLE,
            capture_features=features,
            store=store,
            clock=clock,
        )
        self.recorded: tuple | None = None  # the (step, window) the store holds

    def record(self, previous, apply_model, timestep: torch.Tensor, own: dict, source: SourceInput) -> None:
        """Record the features of `source` (the source path of a step's calls at `timestep` [B], whose
        transformer options are `own`) unless the store holds the step and window already."""
        step, source_x, source_context, window = source
        key = (step, window)
        if self.recorded == key:  # recorded before the step's calls, or ComfyUI split them
            return
        timestep = timestep[: source_x.shape[0]]
        options = {
            **(own if self.identity is None else self.identity.model_options["transformer_options"]),
            CONTROL_KEY: self.capture,
            "cond_or_uncond": [0],
            "uuids": [None],
            "sigmas": timestep,
        }
        options.pop(ROLES_KEY, None)
        if window is not None:
            options[CONTEXT_WINDOW_KEY] = window
        self.store.clear()
        c = {"c_crossattn": source_context, "transformer_options": options}
        if self.identity is None:
            source_args = {"input": source_x, "timestep": timestep, "c": c, "cond_or_uncond": [0]}
            _call(previous, apply_model, source_args)
        else:
            self.identity.model.apply_model(source_x, timestep, **c)
        self.recorded = key


def add_source_path(
    model,
    inversion: InversionResult,
    from_store: PreservationControl,
    features: Collection[Feature],
    in_batch: PreservationControl | None = None,
) -> None:
    """Install (on `model`, a clone carrying `in_batch` or else `from_store` as its control) the recompute
    mode's model-function wrapper: each UNet call of the edit gets the source path of its step, in the
    batch through `in_batch` (a control whose injections take the chunk with role SOURCE_ROLE) when it
    is given, the call holds all the step's chunks and they fit one call with the source chunk, else
    from the one-step store of `from_store` (a control injecting from its store) that a `SourceRunner`
    fills with `features`, running the identity model (`in_batch` None) or the sampler's UNet. See the
    module docstring."""
    previous = model.model_options.get("model_function_wrapper")
    identity = inversion.identity if in_batch is None else None
    runner = SourceRunner(inversion, from_store.store, features, identity, from_store.clock)
    if identity is not None:
        model.set_additional_models(IDENTITY_MODELS_KEY, [identity])
    step: list[tuple[int, bool, SourceInput]] = []  # (chunks, fit, source) of the step being evaluated
    window = swcfa_window(model)

    def plan_step(executor, base_model, conds, x_in, timestep, model_options):
        """Before the step's (or window's) UNet calls: how many chunks ComfyUI batches, and whether they
        fit one call with the source chunk and the patches' working memory by ComfyUI's own rule. When
        they do not, the source chunk runs now, so that its features are held on the device when ComfyUI
        decides from its free memory how to split the step's chunks."""
        chunks, frames = sum(len(cond) for cond in conds if cond), x_in.shape[0]
        rows = [(chunks + 1) * frames, *x_in.shape[1:]]
        element_size = base_model.get_dtype().itemsize
        extra = patch_bytes(frames, tuple(x_in.shape[-2:]), element_size, False, chunks + 1, window)
        free = comfy.model_management.get_free_memory(x_in.device)
        fits = in_batch is not None and (base_model.memory_required(rows) + extra) * COMFY_HEADROOM < free
        options = model_options.get("transformer_options", {})
        source = _source_path_input(inversion, from_store, x_in, timestep, options)
        step[:] = [(chunks, fits, source)]
        if not fits:
            runner.record(previous, base_model.apply_model, timestep, options, source)
        try:
            return executor(base_model, conds, x_in, timestep, model_options)
        finally:
            step.clear()

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, STEP_PLAN_KEY, plan_step)

    def with_source_path(apply_model, args):
        if in_batch is not None:
            unsupported = [key for key in ("c_concat", "y", "control") if args["c"].get(key) is not None]
            if unsupported:
                raise ValueError(
                    f"cache mode recompute cannot extend a UNet batch that carries {unsupported} (e.g. a "
                    "ControlNet); run the inversion with cache_mode store"
                )
        options = args["c"]["transformer_options"]
        chunks, fits, source = step[0]  # planned before the step's calls: no device sync in this one
        if fits and chunks == len(args["cond_or_uncond"]):
            return _in_batch(previous, apply_model, args, source.x, source.context)
        runner.record(previous, apply_model, args["timestep"], options, source)
        c = dict(args["c"])
        c["transformer_options"] = {**options, CONTROL_KEY: from_store}
        return _call(previous, apply_model, {**args, "c": c})

    model.set_model_unet_function_wrapper(with_source_path)


def _call(previous, apply_model, args):
    """Run the UNet call `args` through the earlier model-function wrapper, if any."""
    if previous is not None:
        return previous(apply_model, args)
    return apply_model(args["input"], args["timestep"], **args["c"])
