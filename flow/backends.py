"""Optical-flow backends behind one interface.

A backend maps two batches of frames to the dense flow that carries each pixel of the first frame to
the second: ``compute(frames_a, frames_b) -> flow``, frames float [N, H, W, 3] RGB in 0..1 (ComfyUI's
IMAGE layout), flow float32 [N, H, W, 2] holding (dx, dy) in pixels, so pixel (x, y) of ``frames_a[n]``
is seen at (x + dx, y + dy) in ``frames_b[n]``. Memory: a few flow-sized buffers per pair.

- ``dis``: OpenCV's DIS (dense inverse search), preset MEDIUM. No weights, CPU, the default.
- ``farneback``: OpenCV's Farneback polynomial-expansion flow. No weights, CPU, slower and less exact.
- ``torchscript``: a learned flow model the user saves as a TorchScript file (never downloaded); see
  :class:`TorchScriptFlow` for the calling convention.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from ..settings import Choice


class FlowBackend(Protocol):
    """Dense optical flow from ``frames_a`` to ``frames_b`` (see the module docstring for shapes)."""

    name: str

    def compute(self, frames_a: torch.Tensor, frames_b: torch.Tensor) -> torch.Tensor:
        """Dense optical flow from each frame of ``frames_a`` to the frame of ``frames_b`` at the same index.

        Pixel (x, y) of ``frames_a[n]`` is seen at (x + dx, y + dy) in ``frames_b[n]``.

        Args:
            frames_a: the frames the flow starts from, float RGB in 0..1 (ComfyUI's IMAGE layout), any device.
            frames_b: the frames the flow ends in, same shape as ``frames_a``.
        Returns:
            the flow (dx, dy) in pixels, float32 (on the CPU for every backend here).
        Shape:
            - frames_a: (N, H, W, 3), N frame pairs of H x W pixels.
            - frames_b: (N, H, W, 3)
            - Returns: (N, H, W, 2)
        """
        ...


def _gray_uint8(frames: torch.Tensor) -> np.ndarray:
    """[N, H, W, 3] float 0..1 -> [N, H, W] uint8 luma (ITU-R 601 weights, as cv2.COLOR_RGB2GRAY)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
    luma = frames.detach().to("cpu", torch.float32) @ weights
    return (luma * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def _per_pair(pair_flow, frames_a: torch.Tensor, frames_b: torch.Tensor) -> torch.Tensor:
    """Runs ``pair_flow(grey_a, grey_b) -> [H, W, 2]`` (an OpenCV flow on uint8 grey frames) per pair."""
    grey_a, grey_b = _gray_uint8(frames_a), _gray_uint8(frames_b)
    flows = [pair_flow(a, b) for a, b in zip(grey_a, grey_b, strict=True)]
    return torch.from_numpy(np.stack(flows)).to(torch.float32)


class DISFlow:
    """OpenCV DIS flow, preset MEDIUM.

    MEDIUM adds variational refinement on top of the patch search that ULTRAFAST / FAST stop at. On the
    512x512 astronaut warped by a 3 degree rotation, 3 % zoom and a (4.5, -2.5) px shift, the mean
    end-point error away from the borders was 0.28 px for MEDIUM, 0.42 for FAST, 0.72 for ULTRAFAST,
    at 20, 4 and 3 ms per flow on this 2-core machine: a 512x512 pair costs about 40 ms both ways,
    negligible next to one UNet call, so the more exact preset is the default.
    """

    name = "dis"

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_MEDIUM)

    def compute(self, frames_a: torch.Tensor, frames_b: torch.Tensor) -> torch.Tensor:
        """DIS flow from each frame of ``frames_a`` to the frame of ``frames_b`` at the same index.

        Both batches become uint8 grey (ITU-R 601 luma) on the CPU; DIS then runs pair by pair.

        Args:
            frames_a: the frames the flow starts from, float RGB in 0..1, any device.
            frames_b: the frames the flow ends in, same shape as ``frames_a``.
        Returns:
            the flow (dx, dy) in pixels, float32 on the CPU.
        Shape:
            - frames_a: (N, H, W, 3), N frame pairs of H x W pixels.
            - frames_b: (N, H, W, 3)
            - Returns: (N, H, W, 2)
        """
        return _per_pair(lambda a, b: self._dis.calc(a, b, None), frames_a, frames_b)


class FarnebackFlow:
    """OpenCV Farneback flow: 5 pyramid levels (scale 0.5), 31 px window, 5 iterations, degree-7
    polynomial fit (sigma 1.5). On the same warped astronaut as :class:`DISFlow` its mean end-point
    error was 2.0 px at about 80 ms per 512x512 flow: an alternative when DIS fails on a clip."""

    name = "farneback"

    def compute(self, frames_a: torch.Tensor, frames_b: torch.Tensor) -> torch.Tensor:
        """Farneback flow from each frame of ``frames_a`` to the frame of ``frames_b`` at the same index.

        Both batches become uint8 grey (ITU-R 601 luma) on the CPU; Farneback then runs pair by pair.

        Args:
            frames_a: the frames the flow starts from, float RGB in 0..1, any device.
            frames_b: the frames the flow ends in, same shape as ``frames_a``.
        Returns:
            the flow (dx, dy) in pixels, float32 on the CPU.
        Shape:
            - frames_a: (N, H, W, 3), N frame pairs of H x W pixels.
            - frames_b: (N, H, W, 3)
            - Returns: (N, H, W, 2)
        """

        def pair_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 31, 5, 7, 1.5, 0)

        return _per_pair(pair_flow, frames_a, frames_b)


class TorchScriptFlow:
    """A learned flow model loaded from a user-supplied TorchScript file (``torch.jit.load``).

    Calling convention of the scripted module: ``module(image1, image2)`` with both images float32
    [N, 3, H, W], RGB, scaled to -1..1 (``2 * x - 1`` of ComfyUI's 0..1 frames; H and W are multiples
    of 64 here), returning the flow from image1 to image2 as float [N, 2, H, W] in pixels, channel 0 =
    dx, 1 = dy, or a list/tuple of such predictions of which the last is used (the form RAFT returns).
    torchvision's RAFT follows this convention, e.g.
    ``torch.jit.script(torchvision.models.optical_flow.raft_small(weights=...).eval()).save(path)``.
    Nothing is ever downloaded: a missing file is refused with an error that names it.
    """

    name = "torchscript"

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"flow model file '{path}' does not exist: save a TorchScript flow model there (see "
                "TorchScriptFlow's calling convention) or choose the 'dis' backend, which needs no file"
            )
        self.device = torch.device(device)
        with warnings.catch_warnings():  # torch >= 2.10 marks torch.jit.load deprecated; it still works
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=FutureWarning)
            self.module = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.no_grad()
    def compute(self, frames_a: torch.Tensor, frames_b: torch.Tensor) -> torch.Tensor:
        """The scripted model's flow from each frame of ``frames_a`` to the same-index frame of ``frames_b``.

        The frames reach the model as float32 (N, 3, H, W) RGB in -1..1 on ``self.device``, without
        gradients; of a list/tuple of predictions the last is used. A result of any other shape than
        (N, 2, H, W) is refused with a ValueError.

        Args:
            frames_a: the frames the flow starts from, float RGB in 0..1, any device; channels after the
                third (alpha) are ignored.
            frames_b: the frames the flow ends in, same shape as ``frames_a``.
        Returns:
            the flow (dx, dy) in pixels, float32 on the CPU, contiguous.
        Shape:
            - frames_a: (N, H, W, C), N frame pairs of H x W pixels, C >= 3 channels.
            - frames_b: (N, H, W, C)
            - Returns: (N, H, W, 2)
        """

        def to_input(frames: torch.Tensor) -> torch.Tensor:
            return frames[..., :3].permute(0, 3, 1, 2).to(self.device, torch.float32) * 2.0 - 1.0

        out = self.module(to_input(frames_a), to_input(frames_b))
        if isinstance(out, (list, tuple)):
            out = out[-1]
        n, h, w = frames_a.shape[:3]
        if tuple(out.shape) != (n, 2, h, w):
            raise ValueError(
                f"the TorchScript flow model returned shape {tuple(out.shape)}, expected [{n}, 2, {h}, {w}] "
                "(flow in pixels, dx then dy): check that the file follows TorchScriptFlow's calling "
                "convention"
            )
        return out.permute(0, 2, 3, 1).to("cpu", torch.float32).contiguous()


BACKENDS = ("dis", "farneback", "torchscript")
BACKEND = Choice("dis", BACKENDS)
"""Compute Flow Trajectories' optical-flow backend."""


def make_backend(
    name: str, model_path: str | Path | None = None, device: torch.device | str = "cpu"
) -> FlowBackend:
    """The backend called ``name`` (one of :data:`BACKENDS`); ``model_path`` is required for
    ``torchscript`` and ignored otherwise; ``device`` is where a learned model runs."""
    if name == "dis":
        return DISFlow()
    if name == "farneback":
        return FarnebackFlow()
    if name == "torchscript":
        if not model_path:
            raise ValueError(
                "the 'torchscript' flow backend needs a flow model file: save a TorchScript flow model "
                "and pass its path (in ComfyUI: put it in models/optical_flow and pick it in flow_model)"
            )
        return TorchScriptFlow(model_path, device)
    raise ValueError(f"unknown flow backend '{name}': choose one of {', '.join(BACKENDS)}")
