"""Captions from an image-captioning model whose weights are already on this machine.

Any Hugging Face image-text-to-text model folder works (BLIP, Florence-2, LLaVA, Pixtral, Qwen-VL...):
chat models get an instruction, plain captioners (BLIP) a caption prefix. Nothing is downloaded: the
folder is opened with local_files_only, and the command sets HF_HUB_OFFLINE before importing anything.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageOps

CHAT_PROMPT = (
    "Describe this photo in one sentence for an image generator: the person's apparent age, gender, "
    "expression, hair, accessories, pose and the background."
)
PREFIX_PROMPT = "a photo of"  # for plain captioners, the caption starts with this


class Captioner:
    """caption = Captioner(folder, device)(image_path); chat models answer `prompt`, others continue it."""

    def __init__(self, folder: Path, device: torch.device, prompt: str | None = None, max_tokens: int = 60):
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"caption model {folder}: no config.json there. Captions are generated only with weights you "
                "already have (nothing is downloaded): copy a Hugging Face image-to-text model folder here "
                "(e.g. made with `hf download Salesforce/blip-image-captioning-large --local-dir DIR` on a "
                "machine with network), or write the captions as .txt files / metadata.jsonl."
            )
        from transformers import pipeline

        self.pipe = pipeline("image-text-to-text", model=str(folder), device=device, local_files_only=True)
        self.chat = getattr(self.pipe.processor, "chat_template", None) is not None
        self.prompt = prompt or (CHAT_PROMPT if self.chat else PREFIX_PROMPT)
        self.max_tokens = max_tokens

    def __call__(self, path: Path) -> str:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        if self.chat:
            message = [{"role": "user", "content": [{"type": "image", "image": image}]}]
            message[0]["content"].append({"type": "text", "text": self.prompt})
            out = self.pipe(text=message, max_new_tokens=self.max_tokens, return_full_text=False)
        else:
            out = self.pipe(
                images=image, text=self.prompt, max_new_tokens=self.max_tokens, return_full_text=True
            )
        return " ".join(out[0]["generated_text"].split())
