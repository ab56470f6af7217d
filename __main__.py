"""The pack's commands: `python path/to/the/pack COMMAND ...` with ComfyUI's Python (see USAGE).

The pack folder is not an installed package (and its name has a hyphen), so this file imports it under
a fixed name. The pack's __init__.py and nodes/__init__.py register ComfyUI nodes and need ComfyUI's node
API; the commands (headless/, batch/, specialize/) do not, so the pack and nodes/ are registered without running
their __init__.
"""

import importlib.util
import sys
from pathlib import Path

PACKAGE = "comfyui_diffferv"
ROOT = Path(__file__).resolve().parent
COMMANDS = {"edit": "headless.edit_command", "batch": "batch.command", "specialize": "specialize.command"}
USAGE = """usage: python ComfyUI/custom_nodes/ComfyUI-DiffFERV COMMAND [--help]

commands (ComfyUI need not be running):
  edit         edit a face video with the shipped DiffFERV workflow, through ComfyUI, without the browser
  batch        edit many face videos on one or more ComfyUI servers (a job list, resumable)
  specialize   train a face-specialized SD1.5 UNet (DiffFERV section 3.2) for Load Specialized UNet"""


def import_pack() -> None:
    """Register the pack as PACKAGE and its nodes/ folder as PACKAGE.nodes, neither __init__ run (the
    tests import the pack the same way)."""
    for name, folder in ((PACKAGE, ROOT), (PACKAGE + ".nodes", ROOT / "nodes")):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                name, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )
            sys.modules[name] = importlib.util.module_from_spec(spec)  # set up, not run


def import_command(module: str):
    import_pack()
    return importlib.import_module(f"{PACKAGE}.{module}")


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == ROOT:
        sys.path.pop(0)  # the pack's folders must not shadow top-level modules (e.g. ComfyUI's `nodes`)
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    sys.exit(import_command(COMMANDS[sys.argv[1]]).main(sys.argv[2:]))
