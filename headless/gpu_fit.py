"""The edit fitted to the CUDA GPU it runs on, once ComfyUI has started (before any node runs): the GPU
found (`cuda_gpu`, or a server's from its /system_stats), `window_for` names the largest window that fits
when the asked one does not (attention.memory.largest_window), `gpu_problem` says why a run cannot fit at
all."""

from __future__ import annotations

from dataclasses import dataclass

from ..attention.memory import largest_window
from ..windows.schedule import CONTEXT_LENGTH, RunPlan
from .plan import byte_size, gpu_need_of, held_per_frame


@dataclass(frozen=True)
class Gpu:
    """The CUDA GPU the run will use: its name and the bytes free on it."""

    name: str
    free: int


def cuda_gpu() -> Gpu | None:
    """The CUDA GPU ComfyUI runs on (its current device) and its free memory, or None without one. Call it
    once ComfyUI has started (it sets up CUDA's allocator first)."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return Gpu(torch.cuda.get_device_name(), free)


def window_for(plan: RunPlan, gpu: Gpu) -> int | None:
    """None when `plan`'s longest window runs on `gpu` (the least way of `gpu_need_of` fits its free memory);
    else the largest window that does, 0 when not even windows of CONTEXT_LENGTH.low frames do."""
    if gpu_need_of(plan).total <= gpu.free:
        return None
    fits = largest_window(
        gpu.free, plan.sampling_chunks, plan.latent, 2, held_per_frame(plan), longest=CONTEXT_LENGTH.high
    )
    return fits if fits >= CONTEXT_LENGTH.low else 0


def asked_windows(plan: RunPlan) -> str:
    """How `plan` holds its frames, in words ("windows of 24 frames", "the whole clip in one batch (40
    frames)")."""
    window = plan.longest_window
    return (
        f"windows of {window} frames" if plan.windowed else f"the whole clip in one batch ({window} frames)"
    )


def gpu_problem(plan: RunPlan, gpu: Gpu) -> str:
    """Why `plan` cannot run on `gpu` in any window the workflow can take: its need, what the GPU has, and
    what to do (a smaller size; or a workflow with windows, when windows would fit)."""
    need = gpu_need_of(plan)
    mode = "recompute" if plan.sampling_chunks == 3 else "store"
    height, width = (8 * side for side in plan.latent)
    said = (
        f"--window: {asked_windows(plan)} at {width}x{height} in the {mode} cache mode need at least about "
        f"{byte_size(need.total)} of GPU memory and {gpu.name} has {byte_size(gpu.free)} free"
    )
    fits = window_for(plan, gpu)
    if not fits:
        return f"{said}; not even windows of {CONTEXT_LENGTH.low} frames fit: use a smaller --size, or --cpu"
    return (
        f"{said}; windows of {fits} frames would fit, but the workflow has no Context Windows (DiffFERV) node"
    )
