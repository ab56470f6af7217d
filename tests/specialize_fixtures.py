"""Fixtures of the specialization tests: a tiny SD1.5 checkpoint, portrait crops, one short training run.

The checkpoint is written by ComfyUI's own checkpoint writer from the harness's tiny SD1.5 models (real
SD1.5 key layout, 32 base channels), so the training command reads what a user's file would hold.
The portraits are crops of frames of the demo clip (workflows/media, MIT); the general pairs are
synthetic images with plain captions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import DEMO_CLIP
from PIL import Image

FACE_SIZE = 96  # stored size; training runs at 64
CROPS = [
    (0, 20, 20, 300),
    (8, 40, 10, 280),
    (16, 0, 0, 350),
    (24, 60, 30, 260),
    (32, 30, 50, 290),
    (40, 10, 0, 320),
]
CAPTIONS = [
    "a photo of a young woman with curly red hair",
    "a close-up portrait of a smiling woman",
    "a photo of a woman in a polka-dot blouse",
    "a portrait of a woman with brown eyes",
    "a photo of a freckled young woman, earrings",
    "a woman with curly hair looking at the camera",
]


def portrait_crops() -> list[Image.Image]:
    """Square crops (frame, top, left, side) of the demo clip, resized to FACE_SIZE."""
    wanted = {frame: (top, left, side) for frame, top, left, side in CROPS}
    crops = []
    with av.open(str(DEMO_CLIP)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                top, left, side = wanted[index]
                image = frame.to_image().crop((left, top, left + side, top + side))
                crops.append(image.resize((FACE_SIZE, FACE_SIZE), Image.Resampling.LANCZOS))
    return crops


def general_images() -> list[tuple[Image.Image, str]]:
    """Non-face image-text pairs: a sky-like gradient and a checkerboard."""
    ramp = np.linspace(0, 255, FACE_SIZE, dtype=np.float32)
    sky = np.stack([ramp * 0.3, ramp * 0.6, np.full_like(ramp, 230)], -1)[:, None].repeat(FACE_SIZE, 1)
    board = ((np.indices((FACE_SIZE, FACE_SIZE)) // 12).sum(0) % 2 * 255).astype(np.uint8)
    return [
        (Image.fromarray(sky.astype(np.uint8)), "a clear blue sky"),
        (Image.fromarray(np.stack([board] * 3, -1)), "a black and white checkerboard"),
    ]


@dataclass(frozen=True)
class Dataset:
    faces: Path
    general: Path


def write_dataset(root: Path) -> Dataset:
    """Faces captioned by sidecar .txt files (first four) and by metadata.jsonl (the rest)."""
    faces, general = root / "faces", root / "general"
    faces.mkdir(parents=True)
    general.mkdir(parents=True)
    lines = []
    for index, (image, caption) in enumerate(zip(portrait_crops(), CAPTIONS, strict=True)):
        name = f"face_{index}.png"
        image.save(faces / name)
        if index < 4:
            (faces / name).with_suffix(".txt").write_text(caption + "\n")
        else:
            lines.append(json.dumps({"file_name": name, "text": caption}))
    (faces / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    for index, (image, caption) in enumerate(general_images()):
        image.save(general / f"general_{index}.png")
        (general / f"general_{index}.txt").write_text(caption)
    return Dataset(faces, general)


@pytest.fixture(scope="session")
def portraits(tmp_path_factory) -> Dataset:
    return write_dataset(tmp_path_factory.mktemp("portraits"))


@dataclass(frozen=True)
class TinyCheckpoint:
    path: Path  # single-file SD1.5 checkpoint (UNet, CLIP, VAE), fp32
    comfyui: Path  # the ComfyUI host folder (tokenizer, key converter)


@pytest.fixture(scope="session")
def tiny_checkpoint(comfy, tmp_path_factory) -> TinyCheckpoint:
    from comfy.sd import save_checkpoint
    from comfy_harness import build_clip, build_unet, build_vae, host_dir

    path = tmp_path_factory.mktemp("base") / "tiny_sd15.safetensors"
    save_checkpoint(str(path), build_unet(seed=10), build_clip(seed=11), build_vae(seed=12))
    return TinyCheckpoint(path, host_dir())


def train_arguments(
    checkpoint: TinyCheckpoint, data: Dataset, output: Path, steps: int, *extra: str
) -> list[str]:
    """Command-line arguments of a short CPU run: 64 px, batch 4 as 2 micro-batches of 2, learning rate
    raised so a few dozen steps show learning, fp32 exports (compared at tight tolerance)."""
    return [
        "--base", str(checkpoint.path), "--faces", str(data.faces), "--general", str(data.general),
        "--output", str(output), "--steps", str(steps), "--resolution", "64", "--batch-size", "4",
        "--micro-batch", "2", "--learning-rate", "2e-4", "--workers", "0", "--save-dtype", "fp32",
        "--comfyui", str(checkpoint.comfyui), "--device", "cpu", *extra,
    ]  # fmt: skip


def run_command(arguments: list[str]) -> list[float]:
    """Run the `specialize` command in this process; returns the loss of every step it ran. On one
    thread: these small ops are up to 20x slower with 2 threads when other processes load the cores."""
    from comfyui_diffferv.specialize.command import run
    from comfyui_diffferv.specialize.flags import parser

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(parser().parse_args(arguments))
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class TrainedRun:
    output: Path
    losses: list[float]


@pytest.fixture(scope="session")
def trained(comfy, tiny_checkpoint, portraits, tmp_path_factory) -> TrainedRun:
    """24 steps of the command, exports every 8 steps in ComfyUI's key layout."""
    output = tmp_path_factory.mktemp("trained")
    arguments = train_arguments(
        tiny_checkpoint, portraits, output, 24, "--save-every", "8", "--name", "faces"
    )
    return TrainedRun(output, run_command(arguments))


@dataclass(frozen=True)
class ResumedRuns:
    straight: Path  # 4 steps in one go
    resumed: Path  # 2 steps (and a stray loss.csv row of step 3), then resumed to 4
    resumed_losses: list[float]  # the losses of the resumed part


@pytest.fixture(scope="session")
def resumed_runs(comfy, tiny_checkpoint, portraits, tmp_path_factory) -> ResumedRuns:
    """Diffusers key layout; batch 2 as 2 x 1 (gradient accumulation over 2 passes)."""
    straight, resumed = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("resumed")
    small = ("--batch-size", "2", "--micro-batch", "1", "--save-layout", "diffusers", "--name", "faces-d")
    run_command(train_arguments(tiny_checkpoint, portraits, straight, 4, *small))
    run_command(train_arguments(tiny_checkpoint, portraits, resumed, 2, *small))
    with open(resumed / "loss.csv", "a") as f:
        f.write("3,99.0\n")  # as if the run had crashed after step 3, before saving it
    losses = run_command(train_arguments(tiny_checkpoint, portraits, resumed, 4, *small, "--resume"))
    return ResumedRuns(straight, resumed, losses)


def other_family_unet(family: str, layout: str) -> dict[str, torch.Tensor]:
    """A small UNet state dict of another Stable Diffusion family, from the real classes: 'sdxl' (2048-d
    context, 2816-input size/pooled-text embedding, linear proj_in) or 'sd2' (1024-d context, linear
    proj_in); `layout` 'ldm' (ComfyUI's classes) or 'diffusers' (diffusers' class)."""
    context = {"sdxl": 2048, "sd2": 1024}[family]
    adm = 2816 if family == "sdxl" else None
    if layout == "diffusers":
        from diffusers import UNet2DConditionModel

        extra = {"addition_embed_type": "text_time", "addition_time_embed_dim": 8} if adm else {}
        model = UNet2DConditionModel(
            sample_size=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64, 64),
            cross_attention_dim=context,
            attention_head_dim=8,
            use_linear_projection=True,
            projection_class_embeddings_input_dim=adm,
            **extra,
        )
        return model.state_dict()
    from comfy import supported_models
    from comfy_harness import sd15_unet_config

    unet_config = sd15_unet_config(
        model_channels=32, context_dim=context, use_linear_in_transformer=True, adm_in_channels=adm,
        num_heads=-1, num_head_channels=16,
    )  # fmt: skip
    if adm:
        unet_config.update(num_classes="sequential", num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4])
        unet_config.update(transformer_depth=[0, 0, 1, 1, 1, 1], transformer_depth_output=[0, 0, 0] + [1] * 6)
    config_class = supported_models.SDXL if adm else supported_models.SD20
    model_config = config_class(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    return {
        k: torch.zeros_like(v) for k, v in model_config.get_model({}).diffusion_model.state_dict().items()
    }


@pytest.fixture
def single_thread():
    """Run a test's torch work on one thread (see run_command)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tiny_captioner(folder: Path) -> Path:
    """A random-weight BLIP captioning model with a 17-word vocabulary, saved as a Hugging Face model
    folder (config, weights, processor, tokenizer): what a user's local captioner folder holds."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "woman", "man"]
    words += ["smiling", "with", "curly", "red", "hair", "young"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
    config = BlipConfig(
        text_config={**small, "vocab_size": len(words), "encoder_hidden_size": 32, "max_position_embeddings": 64,
                     "bos_token_id": 5, "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    return folder
