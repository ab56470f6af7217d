"""Frame windows: a long clip processed as overlapping windows of its frames (ComfyUI's context windows),
so that the UNet batch holds one window, never the whole clip.

- ``frames.py``: which clip frames one UNet call holds (the window ComfyUI's context handler puts in
  ``transformer_options["context_window"]``), as a tuple of frame indices, and how to name it.
- ``schedule.py``: the static window schedule (the same windows as ComfyUI's ``standard_static``) and
  the plan of a run: windows, UNet calls and the largest UNet batch.

Everything that holds per-clip data (trajectories, cached features, inverted latents) restricts it to a
window with these frame tuples; a later mode that runs the UNet on a subset of frames (keyframes) uses
the same form.

Pure Python / torch; imports no ComfyUI module and nothing else of the pack but the
settings declaration (the window settings are declared in schedule.py).
"""
