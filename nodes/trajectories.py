"""ComputeFlowTrajectories: optical flow between consecutive frames, then trajectories of latent cells at
every grid the attention patches run at (1/8, 1/16, 1/32, 1/64 of the frames), plus a preview.

The work is in ``flow/``; this node parses inputs, finds the optional learned-flow file, reports
progress per frame pair and shapes the outputs.
"""

from __future__ import annotations

import os

import comfy.model_management
import folder_paths
from comfy_api.latest import io

from ..flow.backends import BACKEND, make_backend
from ..flow.consistency import CONSISTENCY_THRESHOLD
from ..flow.preview import PREVIEW_GRID, PREVIEW_GRIDS, render_trajectories
from ..flow.trajectories import build_trajectories
from .common import CATEGORY, PREFIX, Trajectories, input_problem, progress

FLOW_MODELS = "optical_flow"
"""ComfyUI model folder (models/optical_flow) holding user-supplied TorchScript flow models."""
FLOW_MODEL_EXTENSIONS = {".pt", ".pth", ".ts", ".jit"}
"""File types listed in that folder: TorchScript files as torch saves them."""

NO_MODEL = "none"

# Registered here, or (where ComfyUI registers the folder itself, as newer versions do, for .pt/.pth and
# other extensions) widened to TorchScript's; a new set, so no other folder's extensions change.
_paths, _extensions = folder_paths.folder_names_and_paths.get(
    FLOW_MODELS, ([os.path.join(folder_paths.models_dir, FLOW_MODELS)], set())
)
folder_paths.folder_names_and_paths[FLOW_MODELS] = (_paths, set(_extensions) | FLOW_MODEL_EXTENSIONS)


class ComputeFlowTrajectories(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "ComputeFlowTrajectories",
            display_name="Compute Flow Trajectories (DiffFERV)",
            category=CATEGORY,
            description=(
                "Optical flow between consecutive frames (both directions, with an occlusion check), then "
                "trajectories of latent cells at 1/8, 1/16, 1/32 and 1/64 of the frame size for the "
                "trajectory temporal attention. The preview paints each cell in its trajectory's colour: "
                "colours that move with the content mean tracking holds; dark cells belong to short "
                "trajectories (tracking broke)."
            ),
            inputs=[
                io.Image.Input(
                    "frames",
                    tooltip="The video frames, the same ones that are encoded to the latent. Both sides must be "
                    "multiples of 64 (Load Video (DiffFERV) makes them so).",
                ),
                io.Combo.Input(
                    "backend",
                    **BACKEND.widget(),
                    tooltip="Optical flow method. dis: OpenCV DIS, fast and accurate, no model file (default). "
                    "farneback: OpenCV Farneback, slower, less exact. torchscript: a learned flow model you "
                    "supply in models/optical_flow (chosen in flow_model).",
                ),
                io.Float.Input(
                    "consistency_threshold",
                    **CONSISTENCY_THRESHOLD.widget(),
                    tooltip=CONSISTENCY_THRESHOLD.tooltip(
                        "Forward-backward check, in pixels: a pixel whose flow to the next frame and back "
                        "misses its start by more than this counts as occluded, and a latent cell with over half "
                        "its pixels occluded ends its trajectory (cells leaving the frame always end). Lower: "
                        "stricter, shorter trajectories."
                    ),
                ),
                io.Combo.Input(
                    "flow_model",
                    options=[NO_MODEL, *folder_paths.get_filename_list(FLOW_MODELS)],
                    default=NO_MODEL,
                    optional=True,
                    tooltip="For the torchscript backend: a TorchScript flow model in models/optical_flow, called "
                    "as model(image1, image2) on RGB [N, 3, H, W] in -1..1, returning flow [N, 2, H, W] in "
                    "pixels (or a list whose last item is, as torchvision's RAFT does). Nothing is downloaded.",
                ),
                io.Combo.Input(
                    "preview_grid",
                    **PREVIEW_GRID.widget(),
                    tooltip="Which latent grid the preview shows (1/8: finest, the most cells; 1/64: coarsest).",
                ),
            ],
            outputs=[
                Trajectories.Output("trajectories", display_name="trajectories"),
                io.Image.Output("preview", display_name="preview"),
            ],
        )

    @classmethod
    def validate_inputs(cls, backend, preview_grid):
        return input_problem(cls, backend=backend, preview_grid=preview_grid) or True

    @classmethod
    def execute(
        cls, frames, backend, consistency_threshold, preview_grid, flow_model=NO_MODEL
    ) -> io.NodeOutput:
        model_path = None
        if flow_model and flow_model != NO_MODEL:
            model_path = folder_paths.get_full_path_or_raise(FLOW_MODELS, flow_model)
        flow = make_backend(backend, model_path, comfy.model_management.get_torch_device())
        trajectories = build_trajectories(
            frames, flow, consistency_threshold, on_pair=progress(max(int(frames.shape[0]) - 1, 0))
        )
        factor = PREVIEW_GRIDS[preview_grid]
        height, width = trajectories.image_size
        preview = render_trajectories(trajectories.grid(height // factor, width // factor), frames)
        return io.NodeOutput(trajectories, preview)
