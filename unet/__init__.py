"""SD1.5 UNet files: reading `.safetensors` files safely (files.py), judging by layout that a UNet
(ComfyUI or diffusers key layout) is SD1.5's (sd15.py), ComfyUI's config and key names for it
(comfy_keys.py), what trained a file (provenance.py), and building or applying UNets as ComfyUI models
(comfy_model.py).

Only comfy_model.py imports ComfyUI; the others are plain torch/safetensors (the `specialize` command
uses them). Imports nothing of the pack outside unet/.
"""
