"""ApplyTemporalAttention: MODEL + TRAJECTORIES -> MODEL with DiffFERV's SWCFA and TTA self-attention."""

from __future__ import annotations

from comfy_api.latest import io

from ..attention.swcfa import WINDOW, window_problem
from .attention_patches import apply_temporal_attention
from .common import CATEGORY, PREFIX, Trajectories, input_problem

RESOLUTIONS = (64, 32, 16, 8)  # latent grid of each level for a 512 px frame
LEVEL_HELP = (
    "the blocks at the latent's full size (64x64 for 512x512 frames): fine detail, most of the cost",
    "the blocks at 1/2 of the latent size (32x32 for 512x512 frames)",
    "the blocks at 1/4 of the latent size (16x16 for 512x512 frames)",
    "the middle block, at 1/8 of the latent size (8x8 for 512x512 frames)",
)


def _switches(kind: str, what: str) -> list[io.Boolean.Input]:
    return [
        io.Boolean.Input(f"{kind}_{size}", default=True, tooltip=f"{what} in {LEVEL_HELP[level]}.")
        for level, size in enumerate(RESOLUTIONS)
    ]


class ApplyTemporalAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "ApplyTemporalAttention",
            display_name="Apply Temporal Attention (DiffFERV)",
            category=CATEGORY,
            description=(
                "Makes an SD1.5 MODEL process the frames of a clip jointly: each frame's self-attention also "
                "sees its neighbouring frames (sliding-window cross-frame attention), then every latent cell "
                "attends along its optical-flow trajectory across the whole clip (trajectory attention). "
                "Training-free; composes with LoRA loaders. The latent batch must be the clip's frames in "
                "order, the same frames the TRAJECTORIES were computed from."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A Stable Diffusion 1.5 model (or a fine-tune of it)."),
                Trajectories.Input(
                    "trajectories",
                    tooltip="Optical-flow trajectories of the clip (Compute Flow Trajectories), from the same "
                    "frames, at the same size, as the latent.",
                ),
                io.Int.Input(
                    "window",
                    **WINDOW.widget(),
                    tooltip=WINDOW.tooltip(
                        "Frames each frame attends to in the sliding window, itself included, an odd number. At "
                        "the first and last frames the window is cut, not shifted. 1 turns the cross-frame part "
                        "off. Cost grows about linearly with it."
                    ),
                ),
                *_switches("swcfa", "Sliding-window cross-frame attention (local smoothness)"),
                *_switches("tta", "Trajectory attention (consistency along motion over the whole clip)"),
            ],
            outputs=[
                io.Model.Output(
                    "patched_model",
                    display_name="model",
                    tooltip="The model with temporal attention; the input model is unchanged.",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, window):
        return input_problem(cls, window=window) or (window is not None and window_problem(window)) or True

    @classmethod
    def execute(cls, model, trajectories, window, **switches) -> io.NodeOutput:
        swcfa = tuple(switches[f"swcfa_{size}"] for size in RESOLUTIONS)
        tta = tuple(switches[f"tta_{size}"] for size in RESOLUTIONS)
        return io.NodeOutput(apply_temporal_attention(model, trajectories, window, swcfa, tta))
