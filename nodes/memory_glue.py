"""ComfyUI's memory estimate of a DiffFERV UNet call (the pure part: ``attention/memory.py``).

ComfyUI sizes model loading from ``estimate_memory(model, noise_shape, conds)`` before any model-function
wrapper runs (``comfy/sampler_helpers.py``): ``memory_required`` of two chunks of the noise's rows
(cond and uncond), and of one chunk as the minimum (the memory a partial load of the weights leaves
free). A DiffFERV call holds more than it sees: the recompute
mode's source chunk (added by the model-function wrapper of ``preservation_glue.py``) and the patches'
working memory, and, when the recompute mode's source path runs in a call of its own (the identity UNet,
or the sampler's UNet under a cond/uncond split), the one-step store of its features held on the device.
`count_real_rows` installs, on a clone, a ``PREPARE_SAMPLING`` wrapper that hands ComfyUI a noise shape
whose rows cover the largest call the run can make twice over and its smallest once (`UNetCall`: each kind
of call the run may make, the smallest being the one a split comes down to; `noise_rows`; the estimate
may then exceed the largest call, which only frees other models earlier):
per call, the frames of one context window and its anchor frame if the handler adds one (the window
handler's own clamp, done here: the core handler's wrapper is removed from the clone, since it would
clamp the enlarged shape back, and it does not count the anchor) times the chunks, plus the patches'
extra bytes and the bytes held on the device, expressed in rows of ``memory_required`` of one frame.
The estimate is then at least the call's real need; what it comes to is logged with the run
(`estimated_rows`).
"""

from __future__ import annotations

import logging
import math

import comfy.patcher_extension

from ..attention.memory import UNetCall, patch_bytes
from .attention_patches import swcfa_window
from .window_glue import call_length

WRAPPER_KEY = "diffferv_real_rows"
CORE_WINDOWS_KEY = "ContextWindows_prepare_sampling"
"""The key ComfyUI's context windows register their PREPARE_SAMPLING wrapper under."""


def estimated_rows(frames: int, chunks: int, extra_bytes: int, row_bytes: float) -> int:
    """Rows ComfyUI must size for (what `memory_required` of that many frame rows gives): `chunks` chunks of
    `frames` frames and `extra_bytes` more, in rows of `row_bytes` (ComfyUI's estimate for one row)."""
    return frames * chunks + math.ceil(extra_bytes / max(row_bytes, 1.0))


def noise_rows(largest: int, smallest: int) -> int:
    """The rows of the noise shape handed to ComfyUI's estimate, which sizes the largest call at two chunks
    of them (``memory_required``) and the minimum (what a partial load of the weights leaves free) at one:
    enough that the first covers `largest` rows and the second `smallest` rows."""
    return max(math.ceil(largest / 2), smallest)


def count_real_rows(model, *calls: UNetCall):
    """A clone of `model` whose sampling sizes ComfyUI's loading for `calls`, the kinds of UNet call the
    run may make (each with the patches' working memory): ``memory_required`` covers the largest, the
    minimum the smallest (the call a split comes down to). See the module docstring."""
    counted = model.clone()
    window = swcfa_window(model)
    counted.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, CORE_WINDOWS_KEY)

    def real_rows(executor, patcher, noise_shape, *args, **kwargs):
        shape = list(noise_shape)
        shape[0] = call_length((kwargs.get("model_options") or {}).get("context_handler"), shape[0])
        frames = shape[0]
        row_bytes = patcher.model.memory_required([1, *shape[1:]])
        element_size = patcher.model_dtype().itemsize

        def rows_and_extra(call: UNetCall) -> tuple[int, int]:
            patches = patch_bytes(
                frames, tuple(shape[-2:]), element_size, call.cached_source, call.chunks, window
            )
            extra = patches + frames * call.held_per_frame
            return estimated_rows(frames, call.chunks, extra, row_bytes), extra

        sized = sorted(((rows_and_extra(call), call) for call in calls), key=lambda each: each[0][0])
        ((smallest, _), _), ((largest, extra), call) = sized[0], sized[-1]
        shape[0] = noise_rows(largest, smallest)
        logging.info(
            "DiffFERV: ComfyUI sizes memory for %d rows per UNet call (%d frames x %d chunks + %.0f MiB of "
            "attention work and held features), at least %d rows",
            2 * shape[0],
            frames,
            call.chunks,
            extra / 2**20,
            shape[0],
        )
        return executor(patcher, shape, *args, **kwargs)

    counted.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, WRAPPER_KEY, real_rows)
    return counted
