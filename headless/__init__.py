"""ComfyUI without its web server: the in-process runner (runner.py) that validates and executes API-form
workflows with ComfyUI's own validator and executor, the `edit` command over it (edit_command.py) with
its overall progress line (progress.py), and where the pack and ComfyUI are (host.py).

Imports ComfyUI only at run time, inside HeadlessComfy (ComfyUI loads the pack's nodes itself, as a
custom node); never imports nodes/. The `edit` command checks its inputs before ComfyUI starts with the
pure checks of editing.inputs, video/ and unet.files, and plans the run with windows/ (the window
schedule), video.decode (frame count and size of the clip) and editing.preservation (cache sizes and the
auto cache mode); none of them imports ComfyUI.
"""
