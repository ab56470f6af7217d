"""ComputeFlowTrajectories inside a real ComfyUI: wiring, outputs, progress, interruption, errors."""

import warnings

import pytest
import torch
from comfy_harness import PromptError, load_video, load_video_inputs, progress_updates
from comfyui_diffferv.flow.backends import BACKEND
from comfyui_diffferv.flow.consistency import CONSISTENCY_THRESHOLD
from comfyui_diffferv.flow.preview import PREVIEW_GRID
from comfyui_diffferv.flow.trajectory_set import TrajectorySet

NODE = "DiffFERV_ComputeFlowTrajectories"
DEFAULTS = {
    "backend": BACKEND.default,
    "consistency_threshold": CONSISTENCY_THRESHOLD.default,
    "preview_grid": PREVIEW_GRID.default,
}


def demo_frames(comfy, input_clip, count=8, short_side=256):
    return load_video(comfy, input_clip, count, short_side=short_side)


def test_workflow_loads_tracks_and_previews(comfy, input_clip):
    """Load Video -> ComputeFlowTrajectories -> PreviewImage, validated and run by ComfyUI's executor."""
    prompt = {
        "1": {
            "class_type": "DiffFERV_LoadVideo",
            "inputs": load_video_inputs(input_clip, 6, short_side=256),
        },
        "2": {"class_type": NODE, "inputs": {"frames": ["1", 0], **DEFAULTS, "flow_model": "none"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }
    outputs = comfy.run_prompt(prompt)
    assert len(outputs["3"]["images"]) == 6


def test_demo_clip_trajectories_at_every_grid(comfy, input_clip):
    frames = demo_frames(comfy, input_clip, count=8, short_side=256)
    (trajectories, preview), _ = comfy.run_node(NODE, frames=frames, **DEFAULTS)
    # ComfyUI imports the pack under its own module name, so compare the class by name and fields
    assert type(trajectories).__name__ == TrajectorySet.__name__
    assert trajectories.frames == 8 and trajectories.image_size == (256, 256)
    assert set(trajectories.grids) == {(32, 32), (16, 16), (8, 8), (4, 4)}
    for (h, w), grid in trajectories.grids.items():
        assert grid.ids.shape == (8, h * w)
        assert (grid.index >= 0).sum() == 8 * h * w
        assert grid.full_span_share > 0.8  # a talking head: most cells are tracked over 8 frames
    assert preview.shape == frames.shape and 0 <= float(preview.min()) <= float(preview.max()) <= 1
    # the preview is the frames with colours painted over them, cell by cell (16 px cells at 1/16)
    cell = preview[0, 16:32, 32:48].reshape(-1, 3)
    assert not torch.allclose(preview, frames) and cell.std(0).max() < 0.3


def test_progress_per_frame_pair_and_interruption(comfy, input_clip):
    from comfy import model_management

    frames = demo_frames(comfy, input_clip, count=5, short_side=128)
    with progress_updates() as seen:
        comfy.run_node(NODE, frames=frames, **DEFAULTS)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(model_management.InterruptProcessingException):
            comfy.run_node(NODE, frames=frames, **DEFAULTS)
    finally:
        model_management.interrupt_current_processing(False)


class ZeroFlow(torch.nn.Module):
    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(image1[:, :2])


def test_learned_flow_file_from_the_model_folder(comfy, tmp_path):
    folder = tmp_path / "optical_flow"
    folder.mkdir()
    with warnings.catch_warnings():  # torch >= 2.10 marks torch.jit.script deprecated; it still works
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(ZeroFlow()).save(str(folder / "zero_flow.pt"))
    comfy.folder_paths.add_model_folder_path("optical_flow", str(folder))
    info = comfy.node_class(NODE).GET_NODE_INFO_V1()
    assert "zero_flow.pt" in info["input"]["optional"]["flow_model"][1]["options"]

    frames = torch.rand(3, 64, 128, 3)
    options = {**DEFAULTS, "backend": "torchscript"}
    (trajectories, _), _ = comfy.run_node(NODE, frames=frames, flow_model="zero_flow.pt", **options)
    assert all(grid.full_span_share == 1.0 for grid in trajectories.grids.values())  # nothing moves
    with pytest.raises(ValueError, match=r"needs a flow model file.*models/optical_flow"):
        comfy.run_node(NODE, frames=frames, flow_model="none", **options)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 64, 64, 3), "at least 2 frames"),
        ((3, 64, 100, 3), r"100x64 .*multiples of 64.*Load Video \(DiffFERV\)"),
    ],
)
def test_bad_frames_are_refused_with_a_clear_error(comfy, shape, message):
    with pytest.raises(ValueError, match=message):
        comfy.run_node(NODE, frames=torch.rand(shape), **DEFAULTS)


def test_bad_frames_in_a_workflow_report_the_error(comfy):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 2, "color": 0}},
        "2": {"class_type": NODE, "inputs": {"frames": ["1", 0], **DEFAULTS}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }
    with pytest.raises(PromptError, match="multiples of 64"):
        comfy.run_prompt(prompt)
