"""Every shipped workflow through a real ComfyUI server with a random-weight SD1.5 checkpoint of the real
layout in a temporary models folder: submitted over /prompt, the videos fetched back over /view."""

import json
import shutil

import pytest
from comfy_harness import ComfyServer
from comfyui_diffferv.headless.edit_command import prepare_prompt
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
def test_shipped_workflow_runs_on_the_server(server, demo_clip, sd15_checkpoint, name, tmp_path):
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
    shapes = {
        node["inputs"]["filename_prefix"]: probe(
            server.download(history["outputs"][node_id]["images"][0], tmp_path)
        ).frames.shape
        for node_id, node in prompt.items()
        if node["class_type"] == "DiffFERV_VideoCombine"
    }
    assert shapes == {"DiffFERV/edit": (3, 64, 64, 3), "DiffFERV/edit_compare": (3, 64, 128, 3)}
    (report_id,) = [key for key, node in prompt.items() if node["class_type"] == "DiffFERV_EditReport"]
    shown = history["outputs"][report_id]
    report = json.loads(shown["report"][0])
    assert report["frames"] == 3 and len(report["per_frame"]["ssim"]) == 3 and len(shown["images"]) == 1
    assert shown["text"][0].startswith("Edit report: 3 frames, 64x64")
