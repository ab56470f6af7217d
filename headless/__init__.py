"""The `edit` command, in parts, one concern each: the command-line style the pack's commands share
(cli.py); its flags (flags.py), its checks before ComfyUI starts (checks.py), the server flags as request
headers (server_flags.py), the plan fitted to the GPU (gpu_fit.py), the API-form graph and its
edits (graph.py), the face-edit workflow's inputs set from the flags (workflow.py), the plan and the stages
(plan.py), the overall progress line (progress.py), ComfyUI's messages in flag terms (failures.py), the
outputs (outputs.py), one edit made ready to run (edit_job.py) and run with either executor (edit_run.py), what a server has and an edit needs of it
(server_check.py), and the command putting them in order (edit_command.py), in this process
(comfyhost.runner) or on a server (`edit --server`: remote.runner); each job of the batch/ command goes
through the same parts.

May import comfyhost/ and remote/, never ComfyUI or nodes/ (it runs ComfyUI through comfyhost/); checks its
inputs before ComfyUI starts with the pure checks of editing.inputs, masks.inputs, video/, unet.files, unet.sd15
and faces.dlib_models, and plans the run with windows/ (the window schedule), keyframes.selection, video.decode
(frame count and size of the clip), attention.memory (the GPU need) and editing.preservation (cache sizes
and the auto cache mode); none of them imports ComfyUI.
"""
