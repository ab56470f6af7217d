"""The `batch` command: many clips edited on one or more ComfyUI servers. A job list (one job a line:
video, source prompt, edit prompt, any `edit` flag; `jobs.py`), every job and every server checked
before anything is sent (the checks of `edit` and of `edit --server`), one job at a time per server
with the next job going to whichever is free, a job whose server is lost put back for another
(`dispatch.py`), one overall progress line (`headless.progress.PartsProgress`), and a status file in the output folder so
that a second run skips the finished jobs (`status.py`); `command.py` puts them in order.

May import only headless/ (the edit's flags, checks, workflow, plan, the server client and the remote
executor) and never ComfyUI: the servers run the workflows.
"""
