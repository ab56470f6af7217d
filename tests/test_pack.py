"""The pack as ComfyUI and the Comfy Registry see it: registration, schema, metadata (the layout's import
rules: tests/test_layout.py)."""

from pathlib import Path

import pytest
import tomllib
from conftest import ROOT

PREFIX = "DiffFERV_"


def test_comfyui_registers_every_node_with_prefix_category_and_tooltips(comfy):
    assert comfy.pack_node_ids, "the pack registered no nodes"
    for node_id in comfy.pack_node_ids:
        info = comfy.node_class(node_id).GET_NODE_INFO_V1()  # what /object_info serves
        assert node_id.startswith(PREFIX)
        assert info["category"] == "DiffFERV", node_id
        assert info["display_name"] and info["description"], node_id
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name, spec in inputs.items():
            options = spec[1] if len(spec) > 1 else {}
            assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_expected_nodes_are_registered(comfy):
    expected = {
        "DiffFERV_LoadVideo",
        "DiffFERV_VideoCombine",
        "DiffFERV_ComputeFlowTrajectories",
        "DiffFERV_ApplyTemporalAttention",
    }
    assert expected <= set(comfy.pack_node_ids)


def test_registry_metadata(comfy):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    meta, comfy_meta = project["project"], project["tool"]["comfy"]
    for key in ("name", "version", "description", "license", "dependencies"):
        assert meta.get(key), key
    assert meta["urls"]["Repository"].startswith("https://")
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert comfy_meta.get(key), key
    # the oldest ComfyUI the tests run on is the one they run on by default (0.3.75)
    import comfyui_version

    assert comfy_meta["requires-comfyui"] == ">=0.3.75"
    assert comfyui_version.__version__ >= "0.3.75"
    # ComfyUI-Manager installs requirements.txt; the registry reads [project].dependencies: same list
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(requirements) == sorted(meta["dependencies"])
    # ComfyUI parses the same file for the pack (comfy_config); it must not choke on it
    from comfy_config import config_parser

    parsed = config_parser.extract_node_configuration(str(ROOT))
    assert parsed.project.name == meta["name"]


def test_every_core_extra_loads_in_the_headless_host_but_for_want_of_torchaudio(comfy):
    """The in-process host gives core nodes what they reach for while they load (ComfyUI's server object;
    0.33's node replacements register on it): a built-in extra module that does not load fails only
    because torchaudio is missing, which the 0.3.75 test environment leaves out (0.33's needs it)."""
    import importlib

    print(f"\nbuilt-in extras not loaded: {sorted(comfy.extras_not_loaded) or 'none'}")
    for name in comfy.extras_not_loaded:
        with pytest.raises(ModuleNotFoundError) as caught:
            importlib.import_module(f"comfy_extras.{Path(name).stem}")
        assert caught.value.name == "torchaudio", (name, caught.value)
