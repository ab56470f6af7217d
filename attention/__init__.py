"""Temporal attention for SD1.5 self-attention blocks (pure torch; no ComfyUI import)."""
