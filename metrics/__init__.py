"""Measuring an edit against its source video: image quality (PSNR, SSIM), temporal warping error with
the source's optical flow, identity distances of the faces (TL-ID, TG-ID), and the report that gathers
them (numbers per frame and for the clip, JSON, text, a plot).

Plain torch / numpy / OpenCV; may import ``flow`` (the source's flow) and ``faces`` (the optional face
models); imports no ComfyUI module.
"""
