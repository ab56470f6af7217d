"""Edit masks: where an edit may change the clip. Masks at image resolution turned into feathered masks
on a latent grid (latent.py), face regions drawn from 68-point landmarks (regions.py), and one face
followed through a clip from per-frame detections and optical flow (tracking.py).

Pure torch / numpy / OpenCV / kornia; imports no ComfyUI module. May import flow/ (optical flow), nothing
else of the pack.
"""
