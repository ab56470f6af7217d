"""Optical flow (backends.py, consistency.py) and the trajectories of latent cells built from it
(trajectories.py, trajectory_set.py, preview.py).

Pure numpy / torch / OpenCV; imports no ComfyUI module and nothing else of the pack but the
settings declaration (the consistency threshold is declared in consistency.py).
"""
