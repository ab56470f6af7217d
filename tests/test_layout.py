"""The pack's layout, enforced: one concept per package, and what each package may import.

The rules (docs/architecture.md explains them):
- a package imports only the pack packages listed for it in RULES (nodes/ is imported by nobody);
- ComfyUI is imported at module level only by nodes/ and unet/comfy_model.py, and inside functions only
  by those, comfyhost/runner.py (which starts ComfyUI) and specialize/comfy_export.py (ComfyUI's key converter);
- importing any module outside nodes/ and unet/comfy_model.py imports no ComfyUI module;
- nodes/ holds ComfyUI node classes and their glue only.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

RULES = {
    "settings": (),
    "flow": ("settings",),
    "windows": ("settings",),
    "attention": ("flow", "windows", "settings"),
    "editing": ("attention", "flow", "windows", "settings"),
    "video": ("settings",),
    "segments": ("video", "settings"),
    "masks": ("flow", "faces", "settings"),
    "keyframes": ("flow", "settings"),
    "unet": (),
    "specialize": (
        "unet.files",
        "unet.sd15",
        "unet.comfy_keys",
        "comfyhost.host",
        "headless.cli",
        "faces",
        "settings",
    ),
    "comfyhost": (),
    "remote": ("comfyhost.executor",),
    "headless": (
        "comfyhost",
        "remote",
        "attention.memory",
        "editing.inputs",
        "editing.preservation",
        "keyframes.selection",
        "video",
        "unet.files",
        "unet.sd15",
        "windows",
        "masks.inputs",
        "faces.dlib_models",
        "segments",
        "settings",
    ),
    "batch": ("headless", "comfyhost.executor", "remote", "video.staged"),
    "faces": (),
    "metrics": ("flow", "faces"),
    "nodes": (
        "attention",
        "editing",
        "flow",
        "video",
        "unet",
        "windows",
        "metrics",
        "faces",
        "masks",
        "keyframes",
        "settings",
        "comfyhost.host",
        "comfyhost.versions",
    ),
}
"""package -> the pack modules (dotted prefixes) it may import besides its own."""

COMFY_AT_IMPORT = {"nodes", "unet.comfy_model"}
COMFY_IN_FUNCTIONS = COMFY_AT_IMPORT | {"comfyhost.runner", "specialize.comfy_export"}
COMFY_MODULES = {
    "comfy",
    "comfy_api",
    "comfy_execution",
    "comfy_extras",
    "comfy_config",
    "comfyui_version",
    "folder_paths",
    "latent_preview",
    "execution",
    "server",
    "nodes",
    "node_helpers",
}
"""Top-level modules that belong to ComfyUI (an absolute `import nodes` is ComfyUI's nodes.py)."""
NODE_GLUE = {
    "__init__",
    "common",
    "attention_patches",
    "memory_glue",
    "preservation_glue",
    "prompts",
    "window_glue",
    "server_info",
}
"""nodes/ modules that hold glue, not node classes."""


def pack_modules() -> list[tuple[str, Path]]:
    """(dotted name relative to the pack, path) of every module in the rule packages."""
    found = []
    for package in RULES:
        for path in sorted((ROOT / package).glob("*.py")):
            stem = path.stem
            found.append((package if stem == "__init__" else f"{package}.{stem}", path))
    return found


def imports(path: Path, name: str) -> list[tuple[str, bool, bool]]:
    """(imported module, is it inside the pack, is it at module level) for every import in the file."""
    tree = ast.parse(path.read_text())
    package_parts = name.split(".") if path.stem == "__init__" else name.split(".")[:-1]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        at_top = id(node) in top_level
        if isinstance(node, ast.Import):
            found += [(alias.name, False, at_top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.module, False, at_top))
                continue
            base = package_parts[: len(package_parts) - (node.level - 1)] if node.level > 1 else package_parts
            module = [*base, node.module] if node.module else base
            # each name may be a module or an attribute: either way, module.name starts with the module
            found += [(".".join([*module, alias.name]), True, at_top) for alias in node.names]
    return found


def owner(name: str, rules) -> str | None:
    return next((rule for rule in rules if name == rule or name.startswith(rule + ".")), None)


@pytest.mark.parametrize("name, path", pack_modules(), ids=[name for name, _ in pack_modules()])
def test_module_imports_follow_the_rules(name, path):
    package = name.split(".")[0]
    for module, inside, at_top in imports(path, name):
        top = module.split(".")[0]
        if inside:
            if top == package:
                continue
            assert top != "nodes", f"{name} imports {module}: nothing outside nodes/ may import nodes/"
            assert owner(module, RULES[package]), (
                f"{name} imports {module}; {package}/ may import {RULES[package]}"
            )
        elif top in COMFY_MODULES:
            allowed = COMFY_AT_IMPORT if at_top else COMFY_IN_FUNCTIONS
            assert owner(name, allowed), (
                f"{name} imports ComfyUI's {module} ({'module level' if at_top else 'lazily'})"
            )


def test_nodes_holds_only_node_classes_and_glue():
    for path in sorted((ROOT / "nodes").glob("*.py")):
        if path.stem in NODE_GLUE:
            continue
        tree = ast.parse(path.read_text())
        node_classes = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef)
            and any(ast.unparse(base) == "io.ComfyNode" for base in node.bases)
        ]
        assert node_classes, (
            f"nodes/{path.name} defines no ComfyUI node: move it to the package of its concept"
        )


def test_every_package_says_what_it_holds_and_may_import():
    for package in RULES:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert doc and "import" in doc, f"{package}/__init__.py must say what it holds and what it may import"


def test_modules_outside_nodes_import_without_comfyui():
    """Importing every module outside nodes/ and unet/comfy_model.py, in a fresh interpreter, leaves no
    ComfyUI module in sys.modules (lazy imports inside functions are allowed where RULES say so)."""
    names = [name for name, _ in pack_modules() if not owner(name, COMFY_AT_IMPORT)]
    script = f"""
import importlib, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
import conftest
for name in {names!r}:
    importlib.import_module("comfyui_diffferv." + name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(COMFY_MODULES)!r})
assert not bad, bad
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_cover_every_package_of_the_pack():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages - {"tests"} == set(RULES), (
        "a new package needs its line in RULES and docs/architecture.md"
    )
