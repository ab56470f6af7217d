"""Face specialization (DiffFERV section 3.2): the `specialize` command (command.py) that fine-tunes an
SD1.5 UNet on captioned faces mixed with general pairs: data and augmentation (data.py), the training loop
(train.py), the SD1.5 parts in diffusers (sd15_diffusers.py), optional captioning (captioning.py).

diffusers/transformers/kornia/torch; runs without ComfyUI: the one ComfyUI import is the key converter
that `--save-layout comfyui` loads inside a function. May import unet.files and headless.host (to find
ComfyUI's tokenizer), nothing else of the pack.
"""
