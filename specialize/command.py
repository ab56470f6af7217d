"""`specialize`: the pack's command that trains a face-specialized SD1.5 UNet (DiffFERV section 3.2).

    python path/to/ComfyUI/custom_nodes/ComfyUI-DiffFERV specialize --base sd15.safetensors \\
        --faces faces/ --general general/ --steps 10000 --output ComfyUI/models/diffusion_models/faces

Runs with ComfyUI's Python, without starting ComfyUI. Offline by construction: the Hugging Face
libraries are put in offline mode before they are imported and every model is read from local files.
See README.md, section "Training a face-specialized UNet".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..headless.cli import InputRefusedError, run_command
from .branches import check_branch
from .comfy_export import TOKENIZER, comfyui_key_map, find_comfyui
from .flags import parser
from .preparation import prepare_data

LANDMARKS = "face_landmarks.json"  # the identity branch's landmarks, found once per image


def run(args) -> list[float]:
    import torch

    from .sd15_diffusers import TEXT_LENGTH, load_base
    from .train import STATE_DIR, TrainSettings, train

    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        micro_batch=args.micro_batch,
        learning_rate=args.learning_rate,
        resolution=args.resolution,
        general_share=args.general_share,
        max_rotation=args.max_rotation,
        zoom=tuple(args.zoom),
        augment_probability=args.augment_probability,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        save_every=args.save_every,
        save_dtype=args.save_dtype,
        seed=args.seed,
        workers=args.workers,
        name=args.name,
        branch=args.branch,
        max_image_timestep=args.max_image_timestep,
        l1_weight=args.l1_weight,
        identity_weight=args.identity_weight,
        lambda1=args.lambda1,
        lambda2=args.lambda2,
    )
    settings.check()
    make_objective, branch_metadata = check_branch(args, lambda line: print(line, file=sys.stderr))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    output = args.output
    output.mkdir(parents=True, exist_ok=True)
    comfyui = find_comfyui(args.comfyui)
    faces, general = prepare_data(args, output, device)
    if args.general_share == 0:
        general = []
    tokenizer = args.tokenizer or (comfyui / TOKENIZER if comfyui else None)
    parts = load_base(args.base, tokenizer)
    long = sum(n > TEXT_LENGTH for n in parts.caption_lengths([p.caption for p in faces + general]))
    if long:
        print(
            f"note: {long} captions are longer than {TEXT_LENGTH} tokens and are cut there", file=sys.stderr
        )
    key_map = comfyui_key_map(comfyui, parts.unet) if args.save_layout == "comfyui" else None
    resume = None if args.resume is None else (Path(args.resume) if args.resume else output / STATE_DIR)
    objective = make_objective(parts.tokenizer) if make_objective else None
    landmarks = None
    if args.branch == "identity":
        from .objectives import find_landmarks

        landmarks, _ = find_landmarks(
            faces, settings.resolution, lambda line: print(line, file=sys.stderr), output / LANDMARKS
        )
    print(
        f"training ({args.branch}) on {len(faces)} face and {len(general)} general pairs, device {device}",
        file=sys.stderr,
    )
    metadata = {
        "diffferv.base": Path(args.base).name,
        "diffferv.faces": len(faces),
        "diffferv.general": len(general),
        **branch_metadata,
    }
    return train(
        parts, faces, general, settings, output, key_map, resume, device, metadata,
        objective=objective, landmarks=landmarks,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status in the pack's command-line style (headless/cli.py): 2 for bad
    input, with one sentence on stderr, 1 for a failure, 130 for an interruption."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # read at import time by huggingface_hub: set before any import
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from ..faces.dlib_models import FaceModelsMissingError
    from ..faces.onnx_graph import UnsupportedOnnxError
    from ..unet.files import UNetFileError
    from .clip_direction import ClipFileError
    from .data import DataError
    from .train import SettingsError

    refusals = (
        DataError,
        UNetFileError,
        SettingsError,
        FileNotFoundError,
        UnsupportedOnnxError,
        ClipFileError,
        FaceModelsMissingError,
    )

    def body() -> None:
        args = parser().parse_args(argv)
        try:
            run(args)
        except refusals as error:
            raise InputRefusedError(str(error)) from None

    argv = sys.argv[1:] if argv is None else argv
    return run_command(
        "specialize",
        body,
        verbose="--verbose" in argv,
        interrupted="the exports and the training state saved so far are in OUTPUT (continue with --resume)",
    )
