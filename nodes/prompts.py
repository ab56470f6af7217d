"""Prompt checks at validation time, before any model runs: ComfyUI's own SD1.5 tokenizer (CLIP-L's
vocabulary ships with ComfyUI; no CLIP model is loaded) tokenizes the prompt as the CLIP node will."""

from __future__ import annotations

import functools

import folder_paths
from comfy import sd1_clip

from ..editing.inputs import prompt_problem


@functools.cache
def sd15_tokenizer() -> sd1_clip.SD1Tokenizer:
    """The tokenizer of SD1.5's CLIP, with the user's textual-inversion embeddings (built once)."""
    return sd1_clip.SD1Tokenizer(embedding_directory=folder_paths.get_folder_paths("embeddings"))


def token_ids(text: str) -> list[list[int]]:
    """The prompt's chunks of token ids as SD1.5's CLIP node tokenizes it (an embedding's vectors count
    as one token each, id -1)."""
    chunks = sd15_tokenizer().tokenize_with_weights(text)["l"]
    return [[token if isinstance(token, int) else -1 for token, *_ in chunk] for chunk in chunks]


def check_prompt(name: str, text: str | None, allow_empty: bool = False) -> bool | str:
    """A node's validate_inputs answer for a prompt input: True, or why it cannot be used (a linked
    input, None at validation time, is checked when the node runs)."""
    if text is None or (allow_empty and not text.strip()):
        return True
    return prompt_problem(name, text, token_ids(text)) or True
