"""Keyframe editing (IP-FaceDiff's speed mode): which frames are edited (selection.py), and how the edit
of those keyframes reaches the frames between them (propagation.py: the keyframes' change, carried along
the source's optical flow).

Pure torch / numpy / OpenCV; imports no ComfyUI module. May import settings (keyframe_every is
declared in selection.py) and flow/ (optical flow and its
consistency check), nothing else of the pack.
"""
