"""The DiffFERV editing core: DDIM schedules and steps in ComfyUI's sigma form (ddim.py), the inversion's
result and cache-size arithmetic (preservation.py), prompt token alignment (token_alignment.py).

Pure torch; imports no ComfyUI module. May import attention/, flow/ and windows/, nothing else of the pack.
"""
