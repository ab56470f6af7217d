"""Edit masks: where an edit may change the clip. Masks at image resolution turned into feathered masks
on a latent grid (latent.py), face regions drawn from 68-point landmarks (regions.py), one face followed
through a clip from per-frame detections and optical flow (tracking.py, face_mask.py), and a preview of a
mask on its frames (preview.py).

Pure torch / numpy / OpenCV / kornia; imports no ComfyUI module. May import flow/ (optical flow) and
faces/ (the optional dlib models), nothing else of the pack.
"""
