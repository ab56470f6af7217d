"""Temporal warping error: how much a clip changes along the source video's motion.

For each consecutive pair (f, f + 1), pixel x of frame f is compared with frame f + 1 sampled bilinearly at
x + flow(x), the source's forward flow; the error of the pair is the mean absolute difference over RGB and
over the pixels where that flow is reliable (lands inside the frame and passes the forward-backward
check), in 0..255 grey levels. It is Lai et al.'s (2018) warping error, as an absolute rather than a
squared difference.

Measured on the source itself, the error is what its own motion leaves (lighting, motion blur, flow
mistakes); an edit measured with the same flow is as temporally consistent as its source when its error is
close to the source's. Flicker raises it; frames out of order raise it a lot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from ..flow.source_flow import SourceFlow


def warping_errors(
    clips: Sequence[torch.Tensor], flow: SourceFlow, on_pair: Callable[[int], None] | None = None
) -> torch.Tensor:
    """The warping error of each clip with one flow: float64 [len(clips), F-1] (NaN for a pair without a
    reliable pixel).

    ``clips``: float [F, H, W, C] in 0..1, each the size the flow was computed on (``flow.image_size``,
    ``flow.frames`` frames). Loops over pairs (one OpenCV remap per clip and pair); memory: a few
    [H, W, C] float32 buffers, the clips are read in place when they are float32 on the CPU.
    """
    for index, clip in enumerate(clips):
        if clip.shape[0] != flow.frames or tuple(clip.shape[1:3]) != flow.image_size:
            raise ValueError(
                f"clip {index} is {clip.shape[0]} frames of {clip.shape[2]}x{clip.shape[1]}, the flow "
                f"{flow.frames} frames of {flow.image_size[1]}x{flow.image_size[0]}: measure with the flow "
                "of the same source frames"
            )
    height, width = flow.image_size
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    arrays = [np.ascontiguousarray(clip.detach().to("cpu", torch.float32).numpy()) for clip in clips]
    out = np.full((len(clips), flow.frames - 1), np.nan)
    for pair in range(flow.frames - 1):
        forward = flow.forward[pair].numpy().astype(np.float32)  # numpy: no thread pool for one frame
        reliable = flow.reliable[pair].numpy().view(np.uint8)
        if reliable.any():
            map_x, map_y = xs + forward[..., 0], ys + forward[..., 1]
            for index, frames in enumerate(arrays):
                warped = cv2.remap(
                    frames[pair + 1], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                )
                difference = cv2.absdiff(frames[pair], warped.reshape(frames[pair].shape))
                channels = difference.shape[-1]  # cv2.mean: per channel over the masked pixels
                out[index, pair] = 255.0 * sum(cv2.mean(difference, mask=reliable)[:channels]) / channels
        if on_pair is not None:
            on_pair(pair + 1)
    return torch.from_numpy(out)
