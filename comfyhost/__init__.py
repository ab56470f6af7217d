"""ComfyUI as the pack's commands run it: where the pack and ComfyUI are (host.py), what differs between
the ComfyUI versions the pack supports, in one place (versions.py), what running a workflow means wherever
it runs (executor.py: the progress hooks, the problems ComfyUI reports per node, `PromptError`), and
ComfyUI started in this process without its web server, running API-form workflows with its own validator
and executor (runner.py: `HeadlessComfy`).

May import no other pack package; imports ComfyUI only at run time, inside `HeadlessComfy` (which starts it
and lets ComfyUI load the pack's nodes as a custom node); the rest is plain Python, so nodes/ (the pack's
version, the version differences), specialize/ (finding ComfyUI's tokenizer) and the commands use it
without starting ComfyUI.
"""
