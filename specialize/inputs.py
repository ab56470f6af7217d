"""The `specialize` command's settings, declared once (settings.Number / Choice: default, range or
choices, advice): read by its flags and their --help (command.py), by `TrainSettings`' defaults and its
check (train.py), and by the data mix (data.py). Imports only the settings declaration, so the command
line is built before anything heavy loads.
"""

from __future__ import annotations

import math

from ..settings import Choice, Number
from . import BRANCHES

BATCH_SIZE = Number(8, 1, math.inf, advice="8 is the paper's")
"""Images per optimisation step (the effective batch)."""
MICRO_BATCH = Number(2, 1, math.inf, advice="the batch size must be a multiple of it")
"""Images per forward pass; gradients are accumulated over batch size / micro-batch passes."""
LEARNING_RATE = Number(2.5e-6, 0.0, math.inf, advice="2.5e-6 is the paper's")
"""Adam's learning rate."""
RESOLUTION = Number(512, 64, 2048, step=64, advice="a multiple of 64; 512 is SD1.5's")
"""Training size in pixels."""
GENERAL_SHARE = Number(0.1, 0.0, 0.99, advice="0.1 is the paper's; 0 trains on faces only")
"""Share of general image-text pairs in the training stream (less than 1: faces must remain)."""
MAX_ROTATION = Number(15.0, 0.0, 180.0)
"""Face augmentation: rotation range in degrees, either way."""
ZOOM = (0.7, 1.3)
"""Face augmentation: the default zoom range (smallest, largest scale)."""
AUGMENT_PROBABILITY = Number(0.8, 0.0, 1.0)
"""Share of face images augmented."""
MIXED_PRECISION = Choice(
    "auto", ("auto", "no", "fp16", "bf16"), advice="auto: bf16 (or fp16) on a GPU, off on the CPU"
)
GRADIENT_CHECKPOINTING = Choice("auto", ("auto", "on", "off"), advice="auto: on with a GPU")
SAVE_EVERY = Number(500, 1, math.inf)
"""Steps between exports and training-state saves."""
SAVE_LAYOUT = Choice(
    "comfyui",
    ("comfyui", "diffusers"),
    advice="comfyui: original SD keys, needs ComfyUI's code; the node reads both",
)
SAVE_DTYPE = Choice("fp16", ("fp16", "bf16", "fp32"), advice="the training state is always fp32")
WORKERS = Number(2, 0, math.inf, advice="0 decodes in the training process")
"""Image-decoding processes."""
NAME = "diffferv-faces"
"""File name stem of the exports."""
BRANCH = Choice("specialization", BRANCHES)
MAX_IMAGE_TIMESTEP = Number(500, 0, 999)
"""The branches' image-space loss acts at timesteps 0 .. this only."""
L1_WEIGHT = Number(1.0, 0.0, math.inf)
"""Identity branch (IP-FaceDiff Eq. 5): weight of |x0_hat - y0|_1."""
IDENTITY_WEIGHT = Number(1.0, 0.0, math.inf)
"""Identity branch (Eq. 5): weight of the identity embeddings' cosine distance."""
LAMBDA1 = Number(0.3, 0.0, math.inf)
"""Edit branch (Eq. 6): weight of the CLIP image distance."""
LAMBDA2 = Number(0.7, 0.0, math.inf)
"""Edit branch (Eq. 6): weight of the CLIP direction term."""

CHECKED = {
    "batch_size": BATCH_SIZE,
    "micro_batch": MICRO_BATCH,
    "learning_rate": LEARNING_RATE,
    "resolution": RESOLUTION,
    "general_share": GENERAL_SHARE,
    "max_rotation": MAX_ROTATION,
    "augment_probability": AUGMENT_PROBABILITY,
    "save_every": SAVE_EVERY,
    "workers": WORKERS,
    "max_image_timestep": MAX_IMAGE_TIMESTEP,
    "l1_weight": L1_WEIGHT,
    "identity_weight": IDENTITY_WEIGHT,
    "lambda1": LAMBDA1,
    "lambda2": LAMBDA2,
}
"""TrainSettings field -> its declaration, for the fields checked against a declared range."""
CHOSEN = {
    "mixed_precision": MIXED_PRECISION,
    "gradient_checkpointing": GRADIENT_CHECKPOINTING,
    "save_dtype": SAVE_DTYPE,
    "branch": BRANCH,
}
"""TrainSettings field -> its declaration, for the fields picked from declared choices."""


def flag_of(field: str) -> str:
    """The command-line flag of a TrainSettings field (max_image_timestep -> --max-image-timestep)."""
    return "--" + field.replace("_", "-")
