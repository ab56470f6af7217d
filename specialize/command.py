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

from ..headless import host

TOKENIZER = Path("comfy") / "sd1_tokenizer"
GENERATED_CAPTIONS = "generated_captions.jsonl"
DATA_REPORT = "data_report.txt"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
        default=0.1,
        help="share of general pairs in the training stream (default 0.1, the paper's 10%%; 0 trains on faces only)",
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
    training.add_argument(
        "--name", default="diffferv-faces", help="file name stem of the exports (default diffferv-faces)"
    )
    training.add_argument(
        "--steps", type=int, required=True, help="optimisation steps (one step = one effective batch)"
    )
    training.add_argument(
        "--batch-size", type=int, default=8, help="effective batch (default 8, the paper's)"
    )
    training.add_argument(
        "--micro-batch",
        type=int,
        default=2,
        help="images per forward pass; gradients are accumulated over batch-size/micro-batch passes (default 2)",
    )
    training.add_argument(
        "--learning-rate", type=float, default=2.5e-6, help="Adam learning rate (default 2.5e-6, the paper's)"
    )
    training.add_argument(
        "--resolution", type=int, default=512, help="training size in pixels, a multiple of 64 (default 512)"
    )
    training.add_argument(
        "--max-rotation",
        type=float,
        default=15.0,
        help="face augmentation: rotation range in degrees (default 15)",
    )
    training.add_argument(
        "--zoom",
        type=float,
        nargs=2,
        default=(0.7, 1.3),
        metavar=("MIN", "MAX"),
        help="face augmentation: zoom range (default 0.7 1.3)",
    )
    training.add_argument(
        "--augment-probability", type=float, default=0.8, help="share of face images augmented (default 0.8)"
    )
    training.add_argument(
        "--mixed-precision",
        choices=("auto", "no", "fp16", "bf16"),
        default="auto",
        help="auto: bf16 (or fp16) on a GPU, off on the CPU",
    )
    training.add_argument(
        "--gradient-checkpointing", choices=("auto", "on", "off"), default="auto", help="auto: on with a GPU"
    )
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--workers", type=int, default=2, help="image-decoding processes (default 2)")
    training.add_argument("--device", help="torch device (default: cuda if present, else cpu)")

    saving = p.add_argument_group("checkpoints")
    saving.add_argument(
        "--save-every",
        type=int,
        default=500,
        help="steps between exports and training-state saves (default 500)",
    )
    saving.add_argument(
        "--save-layout",
        choices=("comfyui", "diffusers"),
        default="comfyui",
        help="key layout of the exports: comfyui (original SD, needs ComfyUI's code) or diffusers; the node reads both",
    )
    saving.add_argument(
        "--save-dtype",
        choices=("fp16", "bf16", "fp32"),
        default="fp16",
        help="dtype of the exports (default fp16); the training state is always fp32",
    )
    saving.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="STATE_DIR",
        help="continue from a training state folder (no value: OUTPUT/training_state)",
    )

    where = p.add_argument_group("where things are")
    where.add_argument(
        "--comfyui",
        type=Path,
        help="ComfyUI folder (default: $DIFFFERV_COMFYUI, or the ComfyUI this pack is installed in); gives the CLIP tokenizer and the comfyui key layout",
    )
    where.add_argument(
        "--tokenizer", type=Path, help="CLIP tokenizer folder (vocab.json, merges.txt) instead of ComfyUI's"
    )
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
    )
    settings.check()
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
    print(f"training on {len(faces)} face and {len(general)} general pairs, device {device}", file=sys.stderr)
    metadata = {
        "diffferv.base": Path(args.base).name,
        "diffferv.faces": len(faces),
        "diffferv.general": len(general),
    }
    return train(parts, faces, general, settings, output, key_map, resume, device, metadata)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, with the reason on stderr)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # read at import time by huggingface_hub: set before any import
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    args = parser().parse_args(argv)
    from ..unet.files import UNetFileError
    from .data import DataError
    from .train import SettingsError

    try:
        run(args)
    except (DataError, UNetFileError, SettingsError, FileNotFoundError) as error:
        print(f"specialize: error: {error}", file=sys.stderr)
        return 2
    return 0
