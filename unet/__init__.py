"""SD1.5 UNet files: reading `.safetensors` UNets (ComfyUI or diffusers key layout), checking by layout
that they are SD1.5 (files.py), and building or applying them as ComfyUI models (comfy_model.py).

files.py imports no ComfyUI module (the `specialize` command uses it); comfy_model.py is the one module
here that imports ComfyUI. Imports nothing of the pack outside unet/.
"""
