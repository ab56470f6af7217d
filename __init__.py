"""DiffFERV face video editing for ComfyUI.

ComfyUI loads this folder as a custom-node package and calls `comfy_entrypoint`. The node modules
import ComfyUI, so they are imported only here, on demand: the algorithm packages (`flow`,
`attention`) stay importable without a ComfyUI host. ``WEB_DIRECTORY`` holds the pack's frontend
extension (web/edit_report.js: the Edit Report's text on its node; web/training_info.js: what trained the
UNet that Load Specialized UNet loaded).
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """Return the pack's ComfyExtension (ComfyUI's V3 node registration)."""
    from .nodes import DiffFERVExtension

    return DiffFERVExtension()
