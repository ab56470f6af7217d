"""Temporal attention for SD1.5 self-attention blocks: sliding-window cross-frame attention (swcfa.py),
trajectory attention (tta.py), the attn1/attn2 patch functions (patches.py), the capture/injection of
preservation features (control.py) into and from their store (feature_store.py), and the patches' working
memory and what a run needs on a GPU (memory.py).

Pure torch; imports no ComfyUI module. May import flow/ (trajectory sets), windows/ (which frames a call holds) and settings/ (the SWCFA
window's declaration), nothing else of the pack.
"""
