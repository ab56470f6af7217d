"""The `specialize` command's flags: every trained setting's type, default, range and advice from its
declaration (inputs.py), grouped as --help shows them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..headless.cli import CommandParser
from ..settings import Choice, Number
from .inputs import (
    AUGMENT_PROBABILITY,
    BATCH_SIZE,
    BRANCH,
    GENERAL_SHARE,
    GRADIENT_CHECKPOINTING,
    IDENTITY_WEIGHT,
    L1_WEIGHT,
    LAMBDA1,
    LAMBDA2,
    LEARNING_RATE,
    MAX_IMAGE_TIMESTEP,
    MAX_ROTATION,
    MICRO_BATCH,
    MIXED_PRECISION,
    NAME,
    RESOLUTION,
    SAVE_DTYPE,
    SAVE_EVERY,
    SAVE_LAYOUT,
    WORKERS,
    ZOOM,
)


def add_number(group, flag: str, declared: Number, text: str, metavar: str | None = None) -> None:
    """A flag of a declared number: its type and default from the declaration, its --help with the range
    and the advice (the range is checked by TrainSettings.check, in the same words)."""
    kind = int if isinstance(declared.default, int) else float
    group.add_argument(flag, type=kind, default=declared.default, metavar=metavar, help=declared.help(text))


def add_choice(group, flag: str, declared: Choice, text: str) -> None:
    """A flag of a declared choice: its options, default and --help from the declaration."""
    group.add_argument(flag, choices=declared.options, default=declared.default, help=declared.help(text))


def parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="specialize",
        description="Fine-tune an SD1.5 UNet on face images (DiffFERV's specialization stage). Exports UNet "
        ".safetensors files that the Load Specialized UNet (DiffFERV) node loads.",
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--base",
        type=Path,
        required=True,
        help="SD1.5 single-file checkpoint (.safetensors) or diffusers folder",
    )
    data.add_argument(
        "--faces",
        type=Path,
        required=True,
        help="folder of face images with captions (NAME.txt beside each image, or metadata.jsonl)",
    )
    data.add_argument(
        "--face-captions",
        type=Path,
        help="JSON-lines captions file for --faces (default: FACES/metadata.jsonl if present)",
    )
    data.add_argument(
        "--general",
        type=Path,
        help="folder of general image-text pairs mixed in to keep the model general (same format)",
    )
    data.add_argument("--general-captions", type=Path, help="JSON-lines captions file for --general")
    data.add_argument(
        "--general-share",
        type=float,
        default=GENERAL_SHARE.default,
        help=GENERAL_SHARE.help("share of general pairs in the training stream"),
    )
    data.add_argument(
        "--caption-model",
        type=Path,
        help="local folder of an image-to-text model that captions images lacking a caption (nothing is downloaded)",
    )
    data.add_argument(
        "--caption-prompt",
        help="instruction (chat models) or caption prefix (BLIP-like models) for --caption-model",
    )
    data.add_argument(
        "--strict",
        action="store_true",
        help="refuse to train when any file is unusable, instead of skipping it (skipped files are always listed)",
    )

    training = p.add_argument_group("training")
    training.add_argument(
        "--output",
        type=Path,
        required=True,
        help="folder for the exported UNets, training state, loss.csv and data report; a folder under ComfyUI/models/diffusion_models makes the exports appear in the node",
    )
    training.add_argument("--name", default=NAME, help=f"file name stem of the exports (default: {NAME})")
    training.add_argument(
        "--steps", type=int, required=True, help="optimisation steps (one step = one effective batch)"
    )
    add_number(training, "--batch-size", BATCH_SIZE, "images per optimisation step (the effective batch)")
    add_number(
        training,
        "--micro-batch",
        MICRO_BATCH,
        "images per forward pass; gradients are accumulated over batch-size/micro-batch passes",
    )
    add_number(training, "--learning-rate", LEARNING_RATE, "Adam learning rate")
    add_number(training, "--resolution", RESOLUTION, "training size in pixels")
    add_number(training, "--max-rotation", MAX_ROTATION, "face augmentation: rotation range in degrees")
    training.add_argument(
        "--zoom",
        type=float,
        nargs=2,
        default=ZOOM,
        metavar=("MIN", "MAX"),
        help=f"face augmentation: zoom range (default: {ZOOM[0]} {ZOOM[1]})",
    )
    add_number(training, "--augment-probability", AUGMENT_PROBABILITY, "share of face images augmented")
    add_choice(training, "--mixed-precision", MIXED_PRECISION, "autocast dtype")
    add_choice(training, "--gradient-checkpointing", GRADIENT_CHECKPOINTING, "recompute activations")
    training.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_number(training, "--workers", WORKERS, "image-decoding processes")
    training.add_argument("--device", help="torch device (default: cuda if present, else cpu)")

    saving = p.add_argument_group("checkpoints")
    add_number(saving, "--save-every", SAVE_EVERY, "steps between exports and training-state saves")
    add_choice(saving, "--save-layout", SAVE_LAYOUT, "key layout of the exports")
    add_choice(saving, "--save-dtype", SAVE_DTYPE, "dtype of the exports")
    saving.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="STATE_DIR",
        help="continue from a training state folder (no value: OUTPUT/training_state)",
    )

    branches = p.add_argument_group(
        "IP-FaceDiff branches",
        "identity: an identity-preserving UNet (for the inversion); edit: an edit UNet (for the sampler). Both add "
        "an image-space loss on the one-step prediction to the epsilon loss (README: Training IP-FaceDiff's identity and edit UNets)",
    )
    add_choice(
        branches,
        "--branch",
        BRANCH,
        "specialization (DiffFERV's face specialization), identity (IP-FaceDiff Eq. 5) or edit (IP-FaceDiff "
        "Eq. 6)",
    )
    add_number(
        branches,
        "--max-image-timestep",
        MAX_IMAGE_TIMESTEP,
        "identity/edit: the image-space loss acts at timesteps 0..T only",
        metavar="T",
    )
    branches.add_argument(
        "--identity-model",
        default="dlib",
        metavar="dlib|FILE.onnx",
        help="identity: 'dlib' (dlib's face ResNet, public domain; default) or an InsightFace ArcFace .onnx "
        "file, e.g. ComfyUI/models/insightface/models/buffalo_l/w600k_r50.onnx (non-commercial licence; "
        "needs the onnx package)",
    )
    add_number(branches, "--l1-weight", L1_WEIGHT, "identity: weight of |x0_hat - y0|_1", metavar="W")
    add_number(
        branches,
        "--identity-weight",
        IDENTITY_WEIGHT,
        "identity: weight of the identity embeddings' cosine distance",
        metavar="W",
    )
    branches.add_argument(
        "--clip",
        type=Path,
        metavar="FILE",
        help="edit: a two-tower CLIP .safetensors in transformers' layout (both towers and projections), e.g. "
        "OpenAI ViT-L/14; vision-only image encoders are refused",
    )
    branches.add_argument(
        "--edit-phrases",
        type=Path,
        metavar="FILE",
        help="edit: text file of edits appended to the captions, one a line (default: built-in CelebA "
        "attributes: old, smiling, with eyeglasses, with a beard, with blond hair...)",
    )
    add_number(branches, "--lambda1", LAMBDA1, "edit: weight of the CLIP image distance", metavar="W")
    add_number(branches, "--lambda2", LAMBDA2, "edit: weight of the CLIP direction term", metavar="W")

    where = p.add_argument_group("where things are")
    where.add_argument(
        "--comfyui",
        type=Path,
        help="ComfyUI folder (default: $DIFFFERV_COMFYUI, or the ComfyUI this pack is installed in); gives the CLIP tokenizer and the comfyui key layout",
    )
    where.add_argument(
        "--tokenizer", type=Path, help="CLIP tokenizer folder (vocab.json, merges.txt) instead of ComfyUI's"
    )
    where.add_argument("--verbose", action="store_true", help="show the traceback of a failure")
    return p
