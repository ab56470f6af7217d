"""A preview of a long edit on a few frames: where they lie (`preview_stretches`: spread over the clip,
each edited with the whole pipeline on a short stretch of frames around it) and the one image that shows
them (`preview_sheet`: the source frames above, their edit below, the plan's words under them)."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..settings import Number
from .plan import Segment

PREVIEW_FRAMES = Number(
    4, 1, 12, off=0, advice="4 shows the edit across the clip in a small share of the edit's time"
)
"""Frames a preview shows (the `edit` command's --preview; 0: no preview, the edit itself)."""
PREVIEW_STRETCH = 8
"""Frames edited around each previewed frame: enough for the flow, SWCFA and TTA to see it move, well
within one context window."""
CHAR_WIDTH = 8
"""Pixels a character of Pillow's default font takes, at most (for wrapping the text)."""
TILE_HEIGHT = 256
"""Pixels a frame is shown high on the sheet (scaled up or down, the aspect kept)."""


def preview_stretches(total: int, count: int, stretch: int = PREVIEW_STRETCH) -> list[tuple[Segment, int]]:
    """The stretches a preview of `count` frames of a `total`-frame edit runs: (the stretch, the position
    in it of the frame shown), the shown frames at the middles of `count` equal parts of the edit, each
    stretch `stretch` frames (fewer when the edit is shorter) around its frame, inside the edit."""
    stretch = min(stretch, total)
    picked = []
    for index in range(min(count, total)):
        shown = min(total - 1, (2 * index + 1) * total // (2 * count))
        start = min(max(shown - stretch // 2, 0), total - stretch)
        picked.append((Segment(index, start, stretch, 0, 0), shown - start))
    return picked


def preview_sheet(sources: list[np.ndarray], edits: list[np.ndarray], lines: list[str]) -> np.ndarray:
    """The preview image: the source frames side by side above, their edits below, `lines` of text
    under them.

    Args:
        sources: the shown frames as loaded, uint8, all one size.
        edits: their edit, uint8, in the same order.
        lines: the text under the frames (the plan's numbers, the time the whole edit would take).
    Returns:
        the sheet, uint8 RGB: the frames scaled to TILE_HEIGHT high, the text wrapped under them.
    Shape:
        - sources: a list of (H, W, 3)
        - edits: a list of (H, W, 3)
        - Returns: (H', W', 3)
    """
    height, width = sources[0].shape[:2]
    scale = TILE_HEIGHT / height
    tile = (max(1, round(width * scale)), max(1, round(height * scale)))
    font = ImageFont.load_default()
    line_height = 14
    columns = len(sources)
    sheet_width = max(tile[0] * columns, 480)
    lines = [
        part for line in lines for part in textwrap.wrap(line, max(20, sheet_width // CHAR_WIDTH)) or [""]
    ]
    text_height = line_height * len(lines) + 8
    sheet = Image.new("RGB", (sheet_width, 2 * tile[1] + text_height), "white")
    for column, (source, edit) in enumerate(zip(sources, edits, strict=True)):
        for row, frame in enumerate((source, edit)):
            sheet.paste(
                Image.fromarray(frame).resize(tile, Image.Resampling.BICUBIC),
                (column * tile[0], row * tile[1]),
            )
    draw = ImageDraw.Draw(sheet)
    for number, line in enumerate(lines):
        draw.text((4, 2 * tile[1] + 4 + number * line_height), line, fill="black", font=font)
    return np.asarray(sheet)
