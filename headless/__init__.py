"""ComfyUI without its web server: the in-process runner (runner.py) that validates and executes API-form
workflows with ComfyUI's own validator and executor, the `edit` command over it (edit_command.py), and
where the pack and ComfyUI are (host.py).

Imports ComfyUI only at run time, inside HeadlessComfy (ComfyUI loads the pack's nodes itself, as a
custom node); never imports nodes/. The `edit` command checks its inputs before ComfyUI starts with the
pure checks of editing.inputs, video/ and unet.files (none of which imports ComfyUI).
"""
