"""Which cross-attention map columns an edit prompt takes from the source prompt (prompt-to-prompt).

DiffFERV (section 3.4, after Hertz et al.): for text tokens shared by the source and the edit prompt,
the edit path's cross-attention maps are replaced by the source's; maps of new words are kept. Shared
tokens are found by aligning the two token sequences (longest matching blocks, as difflib does), which
handles swapped words ("woman" -> "man": "man" is new), added words ("a woman" -> "an old woman with
glasses": "woman" keeps its source map, "old", "with", "glasses" keep their own) and the start/end/
padding tokens (SD1.5's tokenizer pads with the end token, so padding runs align with each other).
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

import torch


def align_tokens(source: Sequence[int], edit: Sequence[int]) -> torch.Tensor:
    """For each position j of the edit token sequence, the position of the same token in the source
    sequence under the best alignment, or -1 for a token the source does not share.

    source, edit: token ids (whole padded sequences, e.g. 77 per CLIP chunk).
    Returns LongTensor [len(edit)].
    """
    mapping = torch.full((len(edit),), -1, dtype=torch.long)
    matcher = SequenceMatcher(a=list(source), b=list(edit), autojunk=False)
    for block in matcher.get_matching_blocks():
        mapping[block.b : block.b + block.size] = torch.arange(block.a, block.a + block.size)
    return mapping
