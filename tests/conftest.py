"""Shared test set-up.

The pack is imported under the fixed name `comfyui_diffferv` (ComfyUI itself imports it under a name
derived from its folder path), so tests of the pure packages can write
`from comfyui_diffferv.flow import ...` whatever the checkout's folder is called.
"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfyui_diffferv"


def _import_pack() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)


_import_pack()
