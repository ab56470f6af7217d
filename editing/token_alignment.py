"""Which cross-attention map columns an edit prompt takes from the source prompt (prompt-to-prompt).

DiffFERV (section 3.4, after Hertz et al.): for text tokens shared by the source and the edit prompt,
the edit path's cross-attention maps are replaced by the source's; maps of new words are kept. Shared
tokens are found by aligning the two token sequences (longest matching blocks, as difflib does), which
handles swapped words ("woman" -> "man": "man" is new) and added or dropped words ("a woman" -> "an old
woman with glasses": "woman" keeps its source map, "old", "with", "glasses" keep their own).

The padding is aligned by position, not by content: SD1.5's tokenizer ends every sequence with the end
token repeated to full length, so the trailing run of one id is the end token plus padding, and the
k-th position of the edit's run takes the k-th of the source's (the last one once the source's run is
shorter). Every padding column thus has a source column, also when the prompts differ in length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from difflib import SequenceMatcher

import torch


def token_id(token) -> int:
    """The id the alignment compares for one token of a tokenized prompt: a word's vocabulary id, or, for
    one vector of a textual-inversion embedding (ComfyUI's tokenizer puts the vector [768] where a word's
    id would be, for "embedding:name" in a prompt), a negative id made from the vector's values. The same
    embedding in both prompts thus aligns with itself, and never with a word."""
    if isinstance(token, torch.Tensor) and token.numel() > 1:
        values = token.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return -1 - int.from_bytes(hashlib.blake2b(values, digest_size=7).digest(), "little")
    return int(token)


def trailing_run_start(tokens: Sequence[int]) -> int:
    """Index where the final run of identical ids (end token + padding) begins."""
    start = len(tokens)
    while start > 0 and tokens[start - 1] == tokens[-1]:
        start -= 1
    return start


def align_tokens(source: Sequence[int], edit: Sequence[int]) -> torch.Tensor:
    """For each position j of the edit token sequence, the position in the source sequence whose map
    column it takes, or -1 for a token the source does not share.

    Content tokens are aligned by longest matching blocks; the trailing run (end token + padding) by
    position when both sequences end with the same id (see the module docstring). An empty sequence on
    either side gives all -1.

    Args:
        source: token ids of the whole padded source sequence (e.g. 77 per CLIP chunk, ``token_id``).
        edit: token ids of the whole padded edit sequence.
    Returns:
        int64 (LongTensor) on the CPU: a source position or -1 per edit position.
    Shape:
        - source: (N_s,), N_s source tokens (a Python sequence).
        - edit: (N_e,), N_e edit tokens (a Python sequence).
        - Returns: (N_e,)
    """
    mapping = torch.full((len(edit),), -1, dtype=torch.long)
    if not source or not edit:
        return mapping
    source_pad, edit_pad = trailing_run_start(source), trailing_run_start(edit)
    matcher = SequenceMatcher(a=list(source[:source_pad]), b=list(edit[:edit_pad]), autojunk=False)
    for block in matcher.get_matching_blocks():
        mapping[block.b : block.b + block.size] = torch.arange(block.a, block.a + block.size)
    if source[-1] == edit[-1]:
        offsets = torch.arange(len(edit) - edit_pad).clamp(max=len(source) - source_pad - 1)
        mapping[edit_pad:] = source_pad + offsets
    return mapping
