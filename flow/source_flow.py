"""The optical flow of a clip's consecutive frames, kept: what the trajectories were built from, and what an
edit's temporal consistency is measured with (metrics/warping.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .consistency import consistent_pixels


@dataclass(frozen=True)
class SourceFlow:
    """Forward flow of each consecutive pair of a clip and where it can be trusted.

    ``forward`` float16 [F-1, H, W, 2]: (dx, dy) in pixels carrying frame f to frame f + 1 (half precision:
    0.03 px steps at 64 px of motion); ``reliable`` bool [F-1, H, W]: the pixel lands inside frame f + 1
    and passes the forward-backward check (``consistent_pixels``); ``backend`` and ``threshold`` say how it
    was made. Memory: 5 bytes per pixel per pair (about 40 % of the float32 IMAGE frames).
    """

    forward: torch.Tensor
    reliable: torch.Tensor
    backend: str
    threshold: float

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the frames the flow was computed on."""
        return int(self.forward.shape[1]), int(self.forward.shape[2])

    @property
    def frames(self) -> int:
        return int(self.forward.shape[0]) + 1


class FlowRecorder:
    """Collects a SourceFlow pair by pair: ``add(forward, backward)`` [1, H, W, 2] each runs the
    forward-backward check, keeps the forward flow and returns the reliable pixels bool [1, H, W]."""

    def __init__(self, backend: str, threshold: float) -> None:
        self.backend, self.threshold = backend, threshold
        self._forward: list[torch.Tensor] = []
        self._reliable: list[torch.Tensor] = []

    def add(self, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
        """Checks one pair's flow, keeps its forward flow and returns its reliable pixels.

        Runs ``consistent_pixels`` with the recorder's threshold and stores the forward flow (float16, on
        the CPU) and the mask for :meth:`result`.

        Args:
            forward: flow (dx, dy) in pixels carrying frame f to frame f + 1, float, any device.
            backward: flow (dx, dy) in pixels carrying frame f + 1 to frame f, float, any device.
        Returns:
            bool mask on the CPU, True where ``forward`` passes the forward-backward check.
        Shape:
            - forward: (N, H, W, 2), N pairs (1 when added pair by pair) of H x W pixels.
            - backward: (N, H, W, 2)
            - Returns: (N, H, W)
        """
        reliable = consistent_pixels(forward, backward, self.threshold)
        self._forward.append(forward.detach().to("cpu", torch.float16))
        self._reliable.append(reliable)
        return reliable

    def result(self) -> SourceFlow:
        if not self._forward:
            raise ValueError("flows: no frame pairs given; a flow needs a video of at least 2 frames")
        return SourceFlow(torch.cat(self._forward), torch.cat(self._reliable), self.backend, self.threshold)
