"""Where `specialize` finds ComfyUI, for its CLIP tokenizer and for `--save-layout comfyui`'s key names.

The one ComfyUI import of the command (ComfyUI's key converter, comfy.utils) is made inside
`comfyui_key_map`, so the command runs without ComfyUI otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..comfyhost import host

TOKENIZER = Path("comfy") / "sd1_tokenizer"


def find_comfyui(explicit: Path | None) -> Path | None:
    """The ComfyUI folder (found as by ``host.find_comfyui``: --comfyui, $DIFFFERV_COMFYUI, the
    ComfyUI this pack is installed in, a vendored one), or None when there is none and none was named."""
    try:
        folder = host.find_comfyui(explicit)
    except FileNotFoundError:
        if explicit is not None:
            raise
        return None
    if not (folder / TOKENIZER / "vocab.json").is_file():
        raise FileNotFoundError(f"{folder}: not a ComfyUI folder ({TOKENIZER}/vocab.json missing)")
    return folder


def comfyui_key_map(comfyui: Path | None, unet) -> dict[str, str]:
    """{diffusers key: ComfyUI key} for the UNet's weights, from ComfyUI's own converter (comfy.utils)."""
    if comfyui is None:
        raise FileNotFoundError(
            "--save-layout comfyui uses ComfyUI's key converter, and no ComfyUI was found: pass --comfyui "
            "/path/to/ComfyUI, or use --save-layout diffusers (the node reads both)."
        )
    if str(comfyui) not in sys.path:
        sys.path.append(str(comfyui))
    import comfy.utils

    from ..unet.comfy_keys import comfy_key_map

    channels = unet.config.block_out_channels[0]
    return comfy_key_map(unet.state_dict(), channels, comfy.utils.unet_to_diffusers, "the trained UNet")
