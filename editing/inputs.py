"""The editing settings, declared once (settings.Number: default, range, advice), and what a prompt must be, shared by the nodes (their input
limits and validation) and the `edit` command (its flags), so both refuse the same values with the same
words.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..settings import Choice, Number
from .preservation import CACHE_MODES
from .token_alignment import trailing_run_start

STEPS = Number(50, 2, 1000, advice="50 is the paper's; 10 for a first try")
"""DDIM steps of the inversion (the sampler uses the same schedule)."""
TAU_APP = Number(
    0.9,
    0.0,
    1.0,
    step=0.01,
    advice="0.9 for texture edits such as age or make-up, 0.7 for shape edits such as glasses or hair",
)
"""Share of the sampling during which the appearance features are injected."""
GUIDANCE = Number(5.0, 1.0, 30.0, step=0.1, advice="5 is the paper's")
"""Classifier-free guidance scale of the editing sampler."""
CACHE_MODE = Choice("auto", tuple(CACHE_MODES))
"""How the inversion's features reach the sampler (editing.preservation)."""
SOURCE_PROMPT = "a photo of a woman"
"""The default source prompt (what the demo clip shows)."""
EDIT_PROMPT = "a photo of an old woman"
"""The default edit prompt (the source prompt with the change)."""
MAX_PROMPT_TOKENS = 75
"""Text tokens in one CLIP chunk (77 with the start and end tokens)."""


def text_tokens(chunks: Sequence[Sequence[int]]) -> int:
    """Text tokens of a tokenized prompt: its chunks of token ids (each: start token, text, end token
    repeated as padding) without the start and end/padding tokens."""
    return sum(max(trailing_run_start(chunk) - 1, 0) for chunk in chunks)


def prompt_problem(name: str, text: str, chunks: Sequence[Sequence[int]] | None = None) -> str | None:
    """Why a prompt cannot drive the edit (None when it can): it is empty, or its tokens (`chunks`, as
    the SD1.5 tokenizer gives them; not checked when None) fill more than one CLIP chunk, which the
    prompt-to-prompt alignment of the edit and source words cannot handle."""
    if not text.strip():
        return (
            f"{name} is empty: DiffFERV needs a source prompt (what the video shows) and an edit prompt (the "
            "same words with the change), e.g. 'a photo of a woman' -> 'a photo of an old woman'"
        )
    if chunks is not None and len(chunks) > 1:
        count = text_tokens(chunks)
        return (
            f"{name} is {count} tokens long; the edit aligns the words of its prompts within one CLIP chunk "
            f"of {MAX_PROMPT_TOKENS} tokens: shorten it by at least {max(count - MAX_PROMPT_TOKENS, 1)} tokens"
        )
    return None


def check_clip_frames(samples, trajectories) -> None:
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
