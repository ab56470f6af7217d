"""ComfyUI without its web server, and the pack's commands over it: the in-process runner (runner.py) that
validates and executes API-form workflows with ComfyUI's own validator and executor; where the pack and
ComfyUI are (host.py); the command-line style both commands share (cli.py); the `edit` command in parts,
one concern each: its flags (flags.py), its checks before ComfyUI starts (checks.py), the API-form graph
and its edits (graph.py), the face-edit workflow's inputs set from the flags (workflow.py), the plan and
the stages (plan.py), the overall progress line (progress.py), ComfyUI's messages in flag terms
(failures.py), the outputs (outputs.py), one edit made ready to run (edit_job.py), and the command putting
them in order (edit_command.py). The same edit on a ComfyUI server (`edit --server`, and each job of the
batch/ command): the server's HTTP and WebSocket API (server_api.py), what a server has and an edit needs
(server_check.py), and the remote executor beside the in-process one (remote_runner.py).

Imports ComfyUI only at run time, inside HeadlessComfy (ComfyUI loads the pack's nodes itself, as a
custom node); the server side never (it talks HTTP with aiohttp, ComfyUI's own HTTP library); never
imports nodes/. The `edit` command checks its inputs before ComfyUI starts with the
pure checks of editing.inputs, masks.inputs, video/, unet.files and faces.dlib_models, and plans the run
with windows/ (the window schedule), keyframes.selection, video.decode (frame count and size of the clip)
and editing.preservation (cache sizes and the auto cache mode); none of them imports ComfyUI.
"""
