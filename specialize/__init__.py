"""Face specialization (DiffFERV section 3.2) and IP-FaceDiff's identity and edit UNets: the `specialize`
command (command.py) that fine-tunes an SD1.5 UNet on captioned faces mixed with general pairs: its flags
(flags.py) and settings, declared once (inputs.py), the branch checked before anything loads (branches.py),
the data made ready (preparation.py: scans, captions, the report) from data and augmentation (data.py) and
optional captioning (captioning.py), the training loop (train.py), the branches' image-space losses
(objectives.py, clip_direction.py), the SD1.5 parts in diffusers (sd15_diffusers.py), and where ComfyUI is
for its tokenizer and key names (comfy_export.py).

diffusers/transformers/kornia/torch; runs without ComfyUI: the one ComfyUI import is the key converter
that `--save-layout comfyui` loads inside a function (comfy_export.py). May import unet's plain modules (files, sd15, comfy_keys) and comfyhost.host (to find
ComfyUI's tokenizer), headless.cli (the commands' style), faces (the identity networks and dlib's
landmarks) and settings, nothing else of the pack.
"""

BRANCHES = ("specialization", "identity", "edit")
"""What `specialize --branch` trains: DiffFERV's face specialization (epsilon loss only), IP-FaceDiff's
identity-preserving UNet (Eq. 5) or its edit UNet (Eq. 6)."""
