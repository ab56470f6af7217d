"""Optical flow and trajectory construction (pure numpy / torch / OpenCV; no ComfyUI import)."""
