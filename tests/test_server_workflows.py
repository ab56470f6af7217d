"""Every shipped workflow through a real ComfyUI server with a random-weight SD1.5 checkpoint of the real
layout in a temporary models folder: submitted over /prompt, the videos fetched back over /view."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import requests
from comfy_harness import ComfyServer
from comfyui_diffferv.nodes.edit_cli import prepare_prompt
from conftest import ROOT
from video_probe import probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_clip, sd15_checkpoint):
    models = tmp_path_factory.mktemp("models")
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / sd15_checkpoint.name).symlink_to(sd15_checkpoint)
    instance = ComfyServer(tmp_path_factory.mktemp("server"), models_dir=models)
    shutil.copy(demo_clip, instance.workdir / "input" / demo_clip.name)
    instance.start()
    yield instance
    instance.stop()


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "workflows" / "api").glob("*.json")))
def test_shipped_workflow_runs_on_the_server(server, demo_clip, sd15_checkpoint, name):
    workflow = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    prompt = prepare_prompt(
        workflow,
        video=demo_clip.name,
        checkpoint=sd15_checkpoint.name,
        source="a photo of a woman",
        edit="a photo of a woman with glasses",
        frames=3,
        size=64,
        steps=2,
        tau_app=0.9,
        guidance=5.0,
        cache_mode="recompute",
    )
    history = server.wait(server.submit(prompt), timeout=900)
    shapes = {}
    for node_id, node in prompt.items():
        if node["class_type"] != "DiffFERV_VideoCombine":
            continue
        saved = history["outputs"][node_id]["images"][0]
        reply = requests.get(server.url + "/view", params=saved, timeout=60)
        assert reply.ok, reply.text
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / saved["filename"]
            local.write_bytes(reply.content)
            shapes[node["inputs"]["filename_prefix"]] = probe(local).frames.shape
    assert shapes == {"DiffFERV/edit": (3, 64, 64, 3), "DiffFERV/edit_compare": (3, 64, 128, 3)}
