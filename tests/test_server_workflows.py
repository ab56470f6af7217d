"""Every shipped workflow through a real ComfyUI server with a random-weight SD1.5 checkpoint of the real
layout in a temporary models folder: submitted over /prompt, the videos fetched back over /view; and
Cancel (/interrupt) during the long nodes."""

import asyncio
import json
import shutil
import uuid

import aiohttp
import numpy as np
import pytest
import requests
from comfy_harness import ComfyServer, PromptError, one_step_txt2img
from comfyui_diffferv.headless.workflow import prepare_prompt
from conftest import ROOT
from PIL import Image
from video_probe import probe
from workflow_graphs import EDIT_UNET, IDENTITY_UNET

TWO_FACES = ROOT / "workflows" / "media" / "two_faces.mp4"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_clip, sd15_checkpoint):
    models = tmp_path_factory.mktemp("models")
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / sd15_checkpoint.name).symlink_to(sd15_checkpoint)
    # the two-UNet workflow's identity and edit models: the checkpoint's own UNet (a single-file
    # checkpoint is a valid UNet file for Load Specialized UNet)
    (models / "unet").mkdir()
    for name in (IDENTITY_UNET, EDIT_UNET):
        (models / "unet" / name).symlink_to(sd15_checkpoint)
    instance = ComfyServer(tmp_path_factory.mktemp("server"), models_dir=models)
    shutil.copy(demo_clip, instance.workdir / "input" / demo_clip.name)
    shutil.copy(TWO_FACES, instance.workdir / "input" / TWO_FACES.name)
    instance.start()
    yield instance
    instance.stop()


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "workflows" / "api").glob("*.json")))
def test_shipped_workflow_runs_on_the_server(server, demo_clip, sd15_checkpoint, name, tmp_path):
    """At 64 px, 3 frames, 2 steps; a workflow with Face Mask on its two-face clip at 128 px (faces under
    40 px are not found)."""
    workflow = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    masked = any(node["class_type"] == "DiffFERV_FaceMask" for node in workflow.values())
    video, size, width = (TWO_FACES.name, 128, 256) if masked else (demo_clip.name, 64, 64)
    prompt = prepare_prompt(
        workflow,
        video=video,
        checkpoint=sd15_checkpoint.name,
        source="a photo of a woman",
        edit="a photo of a woman with glasses",
        frames=3,
        size=size,
        steps=2,
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
    assert shapes == {"DiffFERV/edit": (3, size, width, 3), "DiffFERV/edit_compare": (3, size, 2 * width, 3)}
    (report_id,) = [key for key, node in prompt.items() if node["class_type"] == "DiffFERV_EditReport"]
    shown = history["outputs"][report_id]
    report = json.loads(shown["report"][0])
    assert report["frames"] == 3 and len(report["per_frame"]["ssim"]) == 3 and len(shown["images"]) == 1
    assert shown["text"][0].startswith(f"Edit report: 3 frames, {width}x{size}")


async def interrupt_when_running(server, prompt: dict, node_id: str) -> str:
    """Submit `prompt` and press Cancel (POST /interrupt) once node `node_id` reports progress, i.e. while
    it runs. Returns the prompt id. Fails if the prompt ends before that node reports."""
    client_id = uuid.uuid4().hex
    url = f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as socket:
        reply = await session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": client_id})
        prompt_id = (await reply.json())["prompt_id"]
        async for message in socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue  # binary messages are previews
            event = json.loads(message.data)
            data = event.get("data", {})
            if event["type"] == "progress" and data.get("node") == node_id:
                await session.post(server.url + "/interrupt")
                return prompt_id
            if event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                raise AssertionError(f"the prompt ended ({event['type']}) before node {node_id} ran: {data}")
    raise AssertionError("the server closed the websocket")


def interrupted_node(server, prompt_id: str) -> str:
    """The node that was running when the prompt was interrupted (its history says so)."""
    with pytest.raises(PromptError, match="execution_interrupted"):
        server.wait(prompt_id, timeout=600)
    history = requests.get(f"{server.url}/history/{prompt_id}", timeout=10).json()[prompt_id]
    (data,) = [data for event, data in history["status"]["messages"] if event == "execution_interrupted"]
    return data["node_id"]


def txt2img_pixels(server, checkpoint: str, tmp_path, text: str) -> np.ndarray:
    """One DDIM step of txt2img with the checkpoint loader's MODEL as the edit prompts have it (same
    loader inputs: ComfyUI hands the cached MODEL object on); the decoded image's pixels."""
    prompt = {
        "loader": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        **one_step_txt2img(["loader", 0], ["loader", 1], ["loader", 2]),
    }
    prompt["t2i_text"]["inputs"]["text"] = text  # a new text (same tokens) makes the sampler run again
    history = server.wait(server.submit(prompt), timeout=600)
    saved = history["outputs"]["t2i_preview"]["images"][0]
    with Image.open(server.download(saved, tmp_path)) as image:
        return np.asarray(image.convert("RGB"))


def test_cancel_during_flow_inversion_or_sampling_leaves_the_server_ready(
    server, demo_clip, sd15_checkpoint, tmp_path
):
    """Cancel (/interrupt) while the flow, the inversion or the sampler runs: the prompt stops in that
    node, the checkpoint's MODEL carries no DiffFERV patch afterwards (txt2img with it gives the same image
    as before any edit ran; a leftover temporal-attention patch would break a one-image batch), and the
    next edit runs to the end."""
    workflow = json.loads((ROOT / "workflows" / "api" / "diffferv_face_edit.json").read_text())
    settings = {
        "video": demo_clip.name,
        "checkpoint": sd15_checkpoint.name,
        "source": "a photo of a woman",
        "edit": "a photo of an old woman",
        "tau_app": 0.9,
        "guidance": 5.0,
        "cache_mode": "store",
    }
    before = txt2img_pixels(server, sd15_checkpoint.name, tmp_path, "a photo of a woman")
    edit = prepare_prompt(workflow, frames=2, size=64, steps=3, **settings)
    by_type = {node["class_type"]: node_id for node_id, node in edit.items()}
    flow_only = {  # the flow of 48 frames at 512 px: long enough to be cancelled while it runs
        "3": {**edit["3"], "inputs": {**edit["3"]["inputs"], "max_frames": 48, "short_side": 512}},
        "4": edit["4"],
        "5": edit["5"],
    }
    cases = [
        (flow_only, by_type["DiffFERV_ComputeFlowTrajectories"]),
        (edit, by_type["DiffFERV_DDIMInvertWithCache"]),
        (edit, by_type["DiffFERV_PreservationInjectSampler"]),
    ]
    for number, (prompt, node_id) in enumerate(cases, start=1):
        prompt_id = asyncio.run(interrupt_when_running(server, prompt, node_id))
        assert interrupted_node(server, prompt_id) == node_id
        after = txt2img_pixels(server, sd15_checkpoint.name, tmp_path, "a photo of a woman" + " " * number)
        assert np.array_equal(after, before), f"the MODEL changed after cancelling node {node_id}"
    history = server.wait(server.submit(prepare_prompt(workflow, frames=2, size=64, steps=2, **settings)))
    saved = history["outputs"][by_type["DiffFERV_VideoCombine"]]["images"][0]
    assert probe(server.download(saved, tmp_path)).frames.shape[0] == 2
