"""The plan of an `edit` run, from the prepared workflow and the clip, before ComfyUI runs a node: frames
and size, keyframes, windows, UNet calls, the largest UNet batch, the cache and the GPU memory the run
needs (`plan_run`, the lines the command prints; `gpu_need_of`), and the run's stages with their estimated
work for the progress line (`stages`)."""

from __future__ import annotations

from pathlib import Path

from ..attention.memory import COMFY_HEADROOM, COMFY_RESERVE, GpuNeed, gpu_need, gpu_needs
from ..editing.preservation import STORE, recompute_bytes, resolve_cache_mode, store_bytes, store_problem
from ..keyframes.selection import Keyframes
from ..video.decode import MAX_FRAME_CAP, SIZE_MULTIPLE, ClipInfo, fitted_size, picked_frames, probe_clip
from ..windows.schedule import RunPlan, frame_evaluations, static_windows
from .cli import InputRefusedError
from .graph import ApiGraph
from .progress import Stage
from .workflow import (
    CHECKPOINT_LOADER,
    EDIT_REPORT,
    FACE_MASK,
    INVERT,
    KEYFRAMES,
    LOAD_VIDEO,
    PROPAGATE,
    SAMPLER,
    TRAJECTORIES,
    UNET_LOADER,
    VIDEO_COMBINE,
    WINDOWS,
)


def byte_size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def plan_run(
    prompt: dict, video: Path, free_ram: int, gpu_free: int | None = None, probed: ClipInfo | None = None
) -> tuple[RunPlan, list[str], int]:
    """What the prepared workflow will do with `video`: the RunPlan of its UNet part (in speed mode, of
    the keyframes), the lines that describe it (frames and size, keyframes, windows, UNet calls, the
    largest UNet batch, the cache mode and its size) and the clip's frame count. `auto` is resolved as
    the inversion node resolves it, against `free_ram` bytes of free system memory; the GPU line says how
    a step runs on a GPU with `gpu_free` bytes free (None: no GPU known). `probed`: what the preflight's
    probe of the clip found (counted up to MAX_FRAME_CAP frames), used instead of probing it again
    unless the workflow takes frames past what it counted."""
    graph = ApiGraph(prompt)
    load = graph.inputs(LOAD_VIDEO)
    invert = graph.inputs(INVERT)
    needed = MAX_FRAME_CAP * load["every_nth"] + load["skip_first_frames"]
    counted = probed is not None and (probed.frames < MAX_FRAME_CAP or needed <= MAX_FRAME_CAP)
    info = probed if counted else probe_clip(video, count_up_to=needed)
    frames = picked_frames(info.frames, load["max_frames"], load["skip_first_frames"], load["every_nth"])
    height, width = fitted_size(info.height, info.width, load["short_side"], SIZE_MULTIPLE, load["fit"])
    keyframes = keyframes_of(graph, frames)
    windows = windows_of(graph, len(keyframes.indices))
    steps, latent = invert["steps"], (height // 8, width // 8)
    store_need = store_bytes(frame_evaluations(windows), steps, latent)
    problem = (
        store_problem("--cache-mode", store_need, free_ram, recompute_bytes(frames, steps, latent))
        if invert["cache_mode"] == STORE
        else None
    )
    if problem:
        raise InputRefusedError(problem)
    mode = resolve_cache_mode(invert["cache_mode"], store_need, free_ram)
    plan = RunPlan(
        len(keyframes.indices),
        tuple(windows),
        steps,
        2 if mode == STORE else 3,
        store_final_call=mode == STORE,
        latent=latent,
    )
    cache = (
        f"store: {byte_size(store_need)} of features in RAM"
        if mode == STORE
        else f"recompute: {byte_size(recompute_bytes(frames, steps, latent))} of inverted latents "
        f"(store would need {byte_size(store_need)})"
    )
    lines = [
        f"video: {video.name}, {info.describe()}",
        f"edit: {frames} frames{starting(load['skip_first_frames'], info.fps)} at {width}x{height}, {steps} + "
        f"{steps} DDIM steps, cache {cache}",
        *speed_mode_lines(graph, keyframes),
        *plan.describe()[1:],
        gpu_line(plan, gpu_free),
        *mask_lines(graph),
    ]
    return plan, lines, frames


def held_per_frame(plan: RunPlan) -> int:
    """Bytes per frame the recompute mode holds on the GPU when its source chunk runs alone (one UNet pass
    of features, fp16 / bf16); 0 in the store mode."""
    return store_bytes(1, 0, plan.latent) if plan.sampling_chunks == 3 else 0


def gpu_need_of(plan: RunPlan, free: int | None = None) -> GpuNeed:
    """The GPU memory `plan` needs (`attention.memory.gpu_need`), the UNet in fp16 or bf16, its longest
    window in the sampler's chunks: the way a step runs with `free` bytes free on the GPU, or the least way
    (what the run cannot do without) when `free` is None."""
    return gpu_need(plan.longest_window, plan.sampling_chunks, plan.latent, 2, held_per_frame(plan), free)


def gpu_line(plan: RunPlan, free: int | None = None) -> str:
    """The plan's line on the GPU memory the run needs (computed, not measured): the way a step runs on
    a GPU with `free` bytes free, or the least way and, when it differs, what the fastest needs."""
    need = gpu_need_of(plan, free)
    held = f" + {byte_size(need.held)} of source features held" if need.held else ""
    line = (
        f"GPU memory: about {byte_size(need.total)} in fp16 / bf16, {need.path} (UNet weights "
        f"{byte_size(need.weights)}{held} + {COMFY_HEADROOM:g} x ComfyUI's estimate of {byte_size(need.call)} "
        f"for the largest UNet call, {need.rows} rows + {byte_size(COMFY_RESERVE)} it keeps free)"
    )
    fastest = gpu_needs(plan.longest_window, plan.sampling_chunks, plan.latent, 2, held_per_frame(plan))[0]
    if free is None and fastest != need:
        line += f"; {fastest.path}: about {byte_size(fastest.total)}"
    return line


def starting(first: int, fps: float) -> str:
    """ " from frame 300 (12.00 s)" for an edit that does not start at the clip's first frame; "" when it
    does."""
    return f" from frame {first} ({first / fps:.2f} s)" if first else ""


def windows_of(graph: ApiGraph, frames: int) -> list[tuple[int, ...]]:
    """The windows the workflow samples `frames` frames in: those of its Context Windows (DiffFERV) node
    (the static schedule), or the whole clip in one batch."""
    key = graph.find(WINDOWS)
    if key is None:
        return [tuple(range(frames))]
    inputs = graph.prompt[key]["inputs"]
    return static_windows(frames, inputs["context_length"], inputs["context_overlap"])


def keyframes_of(graph: ApiGraph, frames: int) -> Keyframes:
    """The frames of the clip the UNet edits: the workflow's Select Keyframes (DiffFERV) keyframes (speed
    mode), or all of them."""
    key = graph.find(KEYFRAMES)
    return Keyframes.every(frames, graph.prompt[key]["inputs"]["keyframe_every"] if key else 1)


def speed_mode_lines(graph: ApiGraph, keyframes: Keyframes) -> list[str]:
    """The plan's line on speed mode (none without a Select Keyframes node)."""
    key = graph.find(KEYFRAMES)
    if key is None:
        return []
    every, edited = graph.prompt[key]["inputs"]["keyframe_every"], len(keyframes.indices)
    return [
        f"speed mode: {edited} keyframes (one every {every} frames, and the last) go through the UNet, the other "
        f"{keyframes.frames - edited} take their edit along the optical flow"
    ]


def mask_lines(graph: ApiGraph) -> list[str]:
    """The plan's line on the face mask (none without a Face Mask node)."""
    key = graph.find(FACE_MASK)
    if key is None:
        return []
    mask = graph.prompt[key]["inputs"]
    feather = graph.inputs(SAMPLER).get("mask_feather_px", 8)
    return [
        f"mask: the {mask['region']} of face {mask['face_index']} (counted {mask['pick']}), grown "
        f"{mask['grow_px']} px, edge feathered {feather} px; outside it the clip stays as it is"
    ]


STAGES = (
    ("load", 0.05, (LOAD_VIDEO, CHECKPOINT_LOADER, UNET_LOADER, KEYFRAMES)),
    ("optical flow", 0.1, (TRAJECTORIES,)),
    ("face mask", 0.3, (FACE_MASK,)),
    ("encode", 0.3, ("VAEEncode",)),
    ("inversion", None, (INVERT,)),
    ("sampling", None, (SAMPLER,)),
    ("decode", 0.6, ("VAEDecode",)),
    ("propagate", 0.2, (PROPAGATE,)),
    ("write", 0.05, (VIDEO_COMBINE, "ImageStitch")),
    ("report", 0.2, (EDIT_REPORT,)),
)
"""The run's stages in order: name, estimated work per frame in UNet frame-evaluations (rough: the ETA
settles once the inversion runs; None for the UNet stages, counted from the plan) and node classes."""


def stages(plan: RunPlan, clip_frames: int | None = None) -> list[Stage]:
    """The run's stages and their estimated work (see headless/progress.py); `clip_frames`: the frames of
    the whole clip when the UNet edits fewer (speed mode: `plan` holds the keyframes)."""
    per_step = frame_evaluations(list(plan.windows))
    unet = {
        "inversion": per_step * (plan.steps + int(plan.store_final_call)),
        "sampling": per_step * plan.steps * plan.sampling_chunks,
    }
    whole = clip_frames or plan.frames
    return [
        Stage(name, frozenset(types), unet[name] if per_frame is None else per_frame * whole)
        for name, per_frame, types in STAGES
    ]


def free_ram() -> int:
    """Free system memory in bytes, as ComfyUI measures it for the CPU (psutil's available memory)."""
    import psutil

    return int(psutil.virtual_memory().available)
