"""ComfyUI glue shared by DDIMInvertWithCache and PreservationInjectSampler: prompts, checks, the
temporal attention, the schedule, the cache mode, and the recompute mode's source chunk.

The recompute mode adds the source path (the inverted latent of the step, the source prompt) to the
UNet batch through ComfyUI's model-function wrapper: ComfyUI builds the edit batch (cond and uncond
chunks) as usual, the wrapper appends one chunk of F frames, labels the chunks' roles for the attention
patches, runs the UNet and returns the edit chunks' output. An earlier wrapper (another node's) is
called with the extended batch, so it keeps working. Under context windows (``window_glue.py``) the
batch holds one window's frames, and so does the source chunk: the inverted latents of those frames.
"""

from __future__ import annotations

import comfy.model_management
import comfy.samplers
import torch

from ..attention.control import ROLES_KEY, PreservationControl
from ..editing.ddim import inversion_sigmas
from ..editing.inputs import prompt_problem
from ..editing.preservation import (
    STORE,
    InversionResult,
    recompute_bytes,
    resolve_cache_mode,
    store_bytes,
)
from ..editing.token_alignment import token_id
from ..windows.frames import call_frames, describe
from ..windows.schedule import frame_evaluations
from .attention_patches import apply_temporal_attention, patched_blocks
from .window_glue import schedule_name, steady_windows, windows_of

ROLE_OF_COND = {0: "edit", 1: "negative"}
SOURCE_ROLE = "source"


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


def model_key(model) -> tuple:
    """Identifies the UNet weights a MODEL runs (clones and re-patches of one loaded model share it)."""
    return (id(model.model), type(model.model).__name__)


def check_clip_frames(samples: torch.Tensor, trajectories) -> None:
    """The latent batch must be the clip the TRAJECTORIES came from: same frame count and size."""
    if samples.ndim != 4 or samples.shape[1] != 4:
        raise ValueError(
            f"latent: expected an SD1.5 latent batch [frames, 4, h, w], got {list(samples.shape)}"
        )
    frames, _, h, w = samples.shape
    if frames < 2:
        raise ValueError("latent: holds 1 frame; a video edit needs at least 2 (encode the clip's frames)")
    if trajectories.frames != frames:
        raise ValueError(
            f"trajectories: computed from {trajectories.frames} frames, but the latent holds {frames}; compute "
            "them from the same frames that were encoded"
        )
    if tuple(trajectories.image_size) != (h * 8, w * 8):
        th, tw = trajectories.image_size
        raise ValueError(
            f"trajectories: computed on {tw}x{th} frames, but the latent is of {w * 8}x{h * 8} frames; compute "
            "them from the same (resized) frames that were encoded"
        )


def temporal_model(model, trajectories):
    """`model` if it already carries DiffFERV temporal attention (Apply Temporal Attention), else a clone
    with it at the default settings (window 3, SWCFA and TTA at every resolution)."""
    if patched_blocks(model)["attn2"]:
        return model
    return apply_temporal_attention(model, trajectories)


def schedule(model, steps: int) -> torch.Tensor:
    """The inversion schedule [steps + 1] (low -> high) of DDIM's uniform timesteps (1, 1 + 1000/steps,
    ...): the schedule ComfyUI's "ddim_uniform" scheduler samples, reversed."""
    sampling = comfy.samplers.calculate_sigmas(
        model.get_model_object("model_sampling"), "ddim_uniform", steps
    )
    return inversion_sigmas(sampling.cpu().to(torch.float32))


def sampling_sigmas(inversion_schedule: torch.Tensor) -> torch.Tensor:
    """The sampling schedule of an inversion schedule: reversed, ending at 0 (DDIM's last step returns
    the denoised latent)."""
    sigmas = inversion_schedule.flip(0).clone()
    sigmas[-1] = 0.0
    return sigmas


def pick_cache_mode(model, mode: str, frames: int, steps: int, latent_hw: tuple[int, int]) -> tuple[str, str]:
    """The cache mode an inversion of `frames` frames with `model` (its context windows included) uses,
    and a line describing both modes' cache sizes. "auto" resolves by `resolve_cache_mode` against the
    free system memory; "store" is refused when the windows change from step to step."""
    channels = int(model.get_model_object("diffusion_model").model_channels)
    evaluated = frame_evaluations(windows_of(model, frames))
    steady = steady_windows(model, frames)
    need = store_bytes(evaluated, steps, latent_hw, channels)
    free = comfy.model_management.get_free_memory(torch.device("cpu"))
    resolved = resolve_cache_mode(mode, need, free, steady)
    if resolved == STORE and not steady:
        raise ValueError(
            f"cache_mode store: the context schedule {schedule_name(model)} moves its windows from step to "
            "step, and the store cache holds features per window: use the schedule standard_static or batched "
            "(Context Windows (DiffFERV) uses standard_static), or cache_mode recompute"
        )
    mib = 2**20
    sizes = f"store {need / mib:.0f} MiB, recompute {recompute_bytes(frames, steps, latent_hw) / mib:.1f} MiB"
    return resolved, sizes


def add_source_chunk(model, inversion: InversionResult, control: PreservationControl) -> None:
    """Install (on `model`, a clone) the recompute mode's model-function wrapper: every UNet call gets
    one more chunk, the source path at that step, with role SOURCE_ROLE."""
    previous = model.model_options.get("model_function_wrapper")
    source_context = inversion.source_cond[0][0]

    def with_source_chunk(apply_model, args):
        x, timestep, c = args["input"], args["timestep"], dict(args["c"])
        unsupported = [key for key in ("c_concat", "y", "control") if c.get(key) is not None]
        if unsupported:
            raise ValueError(
                f"cache mode recompute cannot extend a UNet batch that carries {unsupported} (e.g. a "
                "ControlNet); run the inversion with cache_mode store"
            )
        step = control.step_of(float(timestep[0]))
        window = call_frames(c["transformer_options"])
        source_x = inversion.latents[step] if window is None else inversion.latents[step, list(window)]
        frames = source_x.shape[0]
        if x.shape[0] % frames:
            raise ValueError(
                f"cache mode recompute: the UNet batch of {x.shape[0]} frames is not made of chunks of the "
                f"{frames} frames of {describe(window)}: the latent must be the inverted clip"
            )
        source_x = source_x.to(device=x.device, dtype=x.dtype)
        context = c["c_crossattn"]
        c["c_crossattn"] = torch.cat(
            [context, source_context.to(device=context.device, dtype=context.dtype).expand(frames, -1, -1)]
        )
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
        if previous is not None:
            out = previous(apply_model, extended)
        else:
            out = apply_model(extended["input"], extended["timestep"], **c)
        return out[: x.shape[0]]

    model.set_model_unet_function_wrapper(with_source_chunk)
