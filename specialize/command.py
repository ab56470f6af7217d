"""`specialize`: the pack's command that trains a face-specialized SD1.5 UNet (DiffFERV section 3.2).

    python path/to/ComfyUI/custom_nodes/ComfyUI-DiffFERV specialize --base sd15.safetensors \\
        --faces faces/ --general general/ --steps 10000 --output ComfyUI/models/diffusion_models/faces

Runs with ComfyUI's Python, without starting ComfyUI. Offline by construction: the Hugging Face
libraries are put in offline mode before they are imported and every model is read from local files.
See README.md, section "Training a face-specialized UNet".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..comfyhost import host
from ..headless.cli import CommandParser, InputRefusedError, run_command
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

TOKENIZER = Path("comfy") / "sd1_tokenizer"
GENERATED_CAPTIONS = "generated_captions.jsonl"
DATA_REPORT = "data_report.txt"
LANDMARKS = "face_landmarks.json"  # the identity branch's landmarks, found once per image


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


def find_comfyui(explicit: Path | None) -> Path | None:
    """The ComfyUI folder (found as by ``host.find_comfyui``: --comfyui, $DIFFFERV_COMFYUI, the
    ComfyUI this pack is installed in, a vendored one), or None when there is none and none was named."""
    try:
        folder = host.find_comfyui(explicit)
    except FileNotFoundError:
        if explicit is not None:
            raise
        return None
    if not (folder / TOKENIZER / "vocab.json").is_file():
        raise FileNotFoundError(f"{folder}: not a ComfyUI folder ({TOKENIZER}/vocab.json missing)")
    return folder


def comfyui_key_map(comfyui: Path | None, unet) -> dict[str, str]:
    """{diffusers key: ComfyUI key} for the UNet's weights, from ComfyUI's own converter (comfy.utils)."""
    if comfyui is None:
        raise FileNotFoundError(
            "--save-layout comfyui uses ComfyUI's key converter, and no ComfyUI was found: pass --comfyui "
            "/path/to/ComfyUI, or use --save-layout diffusers (the node reads both)."
        )
    if str(comfyui) not in sys.path:
        sys.path.append(str(comfyui))
    import comfy.utils

    from ..unet.files import comfy_key_map

    channels = unet.config.block_out_channels[0]
    return comfy_key_map(unet.state_dict(), channels, comfy.utils.unet_to_diffusers, "the trained UNet")


def captions_from_model(args, scans, output: Path, device) -> dict[Path, str]:
    """Captions for the scans' uncaptioned images: those generated by an earlier run (kept in
    OUTPUT/generated_captions.jsonl, to review or edit), then new ones from --caption-model."""
    from .data import read_captions_file

    record = output / GENERATED_CAPTIONS
    known = {Path(k): v for k, v in read_captions_file(record).items()} if record.is_file() else {}
    wanted = [image for scan in scans for image in scan.uncaptioned if image.resolve() not in known]
    if wanted:
        from tqdm import tqdm

        from .captioning import Captioner

        captioner = Captioner(args.caption_model, device, args.caption_prompt)
        with open(record, "a", encoding="utf-8") as out:
            for image in tqdm(wanted, desc="captioning", unit="image"):
                known[image.resolve()] = captioner(image)
                out.write(
                    json.dumps({"file_name": str(image.resolve()), "text": known[image.resolve()]}) + "\n"
                )
        del captioner
    return known


def prepare_data(args, output: Path, device):
    """Scan the folders, caption what lacks a caption (if a model is given), report every skipped file
    (console + OUTPUT/data_report.txt). Returns (face pairs, general pairs)."""
    from .data import DataError, Pair, scan_folder

    scans = [scan_folder(args.faces, args.face_captions)]
    if args.general is not None:
        scans.append(scan_folder(args.general, args.general_captions))
    generated = captions_from_model(args, scans, output, device) if args.caption_model else {}
    for scan in scans:
        for image in scan.uncaptioned:
            caption = generated.get(image.resolve(), "")
            if caption:
                scan.pairs.append(Pair(image, caption))
            else:
                reason = "the caption model gave an empty caption" if args.caption_model else "no caption"
                scan.problems.append(
                    (image, f"{reason}: add {image.with_suffix('.txt').name} or a metadata.jsonl line")
                )
    lines = [f"{path}: {reason}" for scan in scans for path, reason in scan.problems]
    if lines:
        (output / DATA_REPORT).write_text("\n".join(lines) + "\n", encoding="utf-8")
        shown = "\n  ".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else "")
        verb = "refusing to train" if args.strict else "skipping them"
        print(
            f"{len(lines)} unusable files ({verb}; full list in {output / DATA_REPORT}):\n  {shown}",
            file=sys.stderr,
        )
        if args.strict:
            raise DataError(f"{len(lines)} unusable files and --strict given")
    faces, general = scans[0].pairs, scans[1].pairs if len(scans) > 1 else []
    if not faces:
        raise DataError(f"{args.faces}: no usable face image-caption pairs")
    if args.general_share > 0 and not general:
        raise DataError(
            f"--general-share {args.general_share} needs general image-text pairs (the prior that keeps the "
            "model general): pass --general FOLDER, or --general-share 0 to train on faces only"
        )
    return sorted(faces, key=lambda p: p.image), sorted(general, key=lambda p: p.image)


BRANCH_OPTIONS = {
    "identity": ("identity_model", "l1_weight", "identity_weight"),
    "edit": ("clip", "edit_phrases", "lambda1", "lambda2"),
}
"""Options that belong to one branch: given with another branch they are refused (they would do nothing)."""


def check_branch(args, log=print):
    """The branch's networks, every file checked before any data is read or model loaded: returns a
    callable (tokenizer) -> image objective, or None for the specialization branch; and the export metadata
    that says which losses made the UNet. Raises with the file and the reason."""
    from .train import SettingsError

    defaults = parser()
    for branch, names in BRANCH_OPTIONS.items():
        given = [n for n in names if getattr(args, n) != defaults.get_default(n)]
        if given and args.branch != branch:
            options = ", ".join("--" + n.replace("_", "-") for n in given)
            raise SettingsError(f"{options} belong to --branch {branch}, not --branch {args.branch}")
    if args.branch == "specialization":
        return None, {"diffferv.branch": "specialization", "diffferv.losses": "epsilon"}
    cap = f"image loss at t <= {args.max_image_timestep}"
    if args.branch == "identity":
        from ..faces.dlib_models import face_models
        from ..faces.identity import ArcFaceIdentity, DlibIdentity
        from ..faces.onnx_graph import UnsupportedOnnxError
        from .objectives import IdentityObjective

        models = face_models()  # the landmarks come from dlib in either case
        if args.identity_model == "dlib":
            network = DlibIdentity(models.resnet)
        else:
            path = Path(args.identity_model)
            if not path.is_file():
                raise FileNotFoundError(f"--identity-model {path}: file not found (or give 'dlib')")
            if path.suffix.lower() != ".onnx":
                raise SettingsError(
                    f"--identity-model {path.name}: expected an InsightFace .onnx file or 'dlib'"
                )
            try:
                network = ArcFaceIdentity(path)
            except UnsupportedOnnxError as error:
                raise UnsupportedOnnxError(f"--identity-model {error}") from error
            log(f"note: {network.licence}")
        losses = (
            f"epsilon + {args.l1_weight:g} L1(x0_hat, y0) + {args.identity_weight:g} "
            f"identity cosine distance ({network.name}); {cap}"
        )
        metadata = {"diffferv.identity_model": network.name}
        objective = IdentityObjective(network, args.l1_weight, args.identity_weight)
        return (lambda tokenizer: objective), {
            "diffferv.branch": "identity",
            "diffferv.losses": losses,
            **metadata,
        }
    from .clip_direction import DirectionalClipLoss, check_clip_file, load_clip, read_edit_phrases
    from .objectives import EditObjective

    if args.clip is None:
        raise SettingsError(
            "--branch edit needs --clip: a two-tower CLIP .safetensors in transformers' layout (e.g. OpenAI "
            "ViT-L/14's model.safetensors)"
        )
    check_clip_file(args.clip)
    phrases = read_edit_phrases(args.edit_phrases)
    losses = (
        f"epsilon + directional CLIP ({args.clip.name}): {args.lambda1:g} image distance + {args.lambda2:g} "
        f"direction, {len(phrases)} edit phrases; {cap}"
    )

    def make(tokenizer):
        return EditObjective(
            DirectionalClipLoss(load_clip(args.clip), args.lambda1, args.lambda2), tokenizer, phrases
        )

    return make, {"diffferv.branch": "edit", "diffferv.losses": losses, "diffferv.clip": args.clip.name}


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
