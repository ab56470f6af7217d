"""A ComfyUI server as the pack's commands drive it: its HTTP and WebSocket API (server_api.py: http and
https, a path prefix, extra headers and tokens never printed nor sent to another origin, every wait
bounded), what goes wrong in three kinds (errors.py), every answer checked before use and server text
masked (answers.py), and the remote executor beside the in-process
one (runner.py: `run_on_server` keeps the executor contract of comfyhost/executor.py; events, the /history
fallback, cancelling its own prompt, output names not trusted; `fetch_outputs`).

May import comfyhost.executor (the contract) and nothing else of the pack; never ComfyUI (it talks HTTP with
aiohttp, ComfyUI's own HTTP library).
"""
