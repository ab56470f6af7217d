"""A stand-in ComfyUI server for the client's tests (`edit --server`, `batch`): aiohttp on a loopback port,
in a thread, answering the routes the client uses the way ComfyUI does, and made to misbehave route by
route; `edit` and `batch` run in this process with their output captured."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import uuid
from pathlib import Path

import numpy as np
import torch
from aiohttp import web
from comfyui_diffferv.batch.command import main as batch_main
from comfyui_diffferv.comfyhost.host import pack_version
from comfyui_diffferv.headless.edit_command import main as edit_main
from comfyui_diffferv.headless.workflow import CHECKPOINT, SPEED_WORKFLOW, WORKFLOW
from comfyui_diffferv.video.encode import FORMATS, write_video

TINY = ["--frames", "2", "--size", "64", "--steps", "2", "--window", "0", "--cache-mode", "recompute"]
"""The smallest edit: what the stand-in "produces" is a clip of its size (`tiny_output`)."""


def tiny_output(folder: Path) -> Path:
    """A 2-frame 64x64 mp4: what a server would produce for a TINY edit."""
    path = folder / "tiny_output.mp4"
    if not path.is_file():
        frames = torch.linspace(0, 1, 2 * 64 * 64 * 3).reshape(2, 64, 64, 3)
        write_video(path, frames, 25.0, FORMATS["mp4 (h264)"], 80)
    return path


def edit(*arguments: str) -> tuple[int, str, str]:
    """`edit` in this process: (status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = edit_main(list(arguments))
    return status, stdout.getvalue(), stderr.getvalue()


def batch(*arguments: str) -> tuple[int, str, str]:
    """`batch` in this process: (status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = batch_main(list(arguments))
    return status, stdout.getvalue(), stderr.getvalue()


class StandIn:
    """A stand-in ComfyUI server on a loopback port, answering what `edit --server` asks: system_stats,
    the pack's info, object_info (the workflow's node classes and the checkpoint), upload, prompt, the
    event socket, queue, history, view. It "runs" a queued prompt by answering with the demo clip as its
    output. `output_name`: the file name its history gives; `drop_socket`: close every event socket at
    once (the client then follows the job through /queue and /history, which say "running" for
    `running_polls` requests); `token`: the bearer token every request must carry (else 401);
    `overrides`: "METHOD /path" (a /history/... request is "GET /history") -> an async handler
    (request) -> response that answers instead, to make one route misbehave."""

    def __init__(
        self,
        clip: Path,
        output_name="edit_00001.mp4",
        drop_socket=False,
        running_polls=0,
        token=None,
        refuse=None,
        overrides=None,
        producer=None,
    ):
        self.clip, self.output_name, self.drop_socket = clip, output_name, drop_socket
        self.running_polls, self.token, self.refuse = running_polls, token, refuse
        self.overrides = dict(overrides or {})
        self.producer = producer
        self.produced: dict[str, dict[str, Path]] = {}  # prompt id -> Video Combine node id -> file
        self.posted: list[str] = []
        self.prompts: dict[str, dict] = {}
        self.requests: list[tuple[str, dict]] = []
        self.history_polls = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def serve(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application(middlewares=[self.check_token])
        app.router.add_get("/system_stats", self.system_stats)
        app.router.add_get("/diffferv/info", self.info)
        app.router.add_get("/object_info", self.object_info)
        app.router.add_post("/upload/image", self.upload)
        app.router.add_post("/prompt", self.prompt)
        app.router.add_get("/ws", self.socket)
        app.router.add_get("/queue", self.queue)
        app.router.add_post("/queue", self.ok)
        app.router.add_post("/interrupt", self.ok)
        app.router.add_get("/history/{prompt_id}", self.history)
        app.router.add_get("/view", self.view)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self.ready.set()
        self.loop.run_forever()

    @web.middleware
    async def check_token(self, request, handler):
        self.requests.append((request.path, dict(request.headers)))
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="401: Unauthorized")
        path = "/history" if request.path.startswith("/history/") else request.path
        route = f"{request.method} {path}"
        if route in self.overrides:
            return await self.overrides[route](request)
        return await handler(request)

    async def system_stats(self, request):
        devices = [{"name": "cpu", "type": "cpu", "vram_free": 0}]
        return web.json_response({"system": {"ram_free": 2**34, "argv": ["main.py"]}, "devices": devices})

    async def info(self, request):
        return web.json_response({"pack": "comfyui-diffferv", "version": pack_version(), "face_models": True})

    async def object_info(self, request):
        classes = {
            node["class_type"]
            for path in (WORKFLOW, SPEED_WORKFLOW)
            for node in json.loads(path.read_text()).values()
        }
        info = {name: {"input": {"required": {}}} for name in classes}
        info["CheckpointLoaderSimple"] = {"input": {"required": {"ckpt_name": [[CHECKPOINT], {}]}}}
        return web.json_response(info)

    async def upload(self, request):
        form = await request.post()
        return web.json_response({"name": form["image"].filename, "subfolder": "", "type": "input"})

    async def prompt(self, request):
        body = await request.json()
        sampler = next(
            k for k, n in body["prompt"].items() if n["class_type"] == "DiffFERV_PreservationInjectSampler"
        )
        edit_prompt = body["prompt"][sampler]["inputs"]["edit_prompt"]
        self.posted.append(edit_prompt)
        if self.refuse and self.refuse in edit_prompt:  # ComfyUI's answer to a workflow that fails validation
            reason = {
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": f"edit_prompt - the edit prompt may not say {self.refuse!r}",
                "extra_info": {"input_name": "edit_prompt"},
            }
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
            }
            node_errors = {sampler: {"errors": [reason], "class_type": "DiffFERV_PreservationInjectSampler"}}
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        self.prompts[body["prompt_id"]] = body["prompt"]
        if self.producer is not None:
            self.produced[body["prompt_id"]] = self.producer(body["prompt"])
        return web.json_response({"prompt_id": body["prompt_id"], "number": 1, "node_errors": {}})

    async def socket(self, request):
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        if not self.drop_socket:
            await asyncio.sleep(0.2)
            for prompt_id in self.prompts:
                await socket.send_json({"type": "execution_success", "data": {"prompt_id": prompt_id}})
        await socket.close()
        return socket

    async def queue(self, request):
        running = [[1, prompt_id] for prompt_id in self.prompts if self.history_polls <= self.running_polls]
        return web.json_response({"queue_running": running, "queue_pending": []})

    async def ok(self, request):
        return web.Response()

    async def history(self, request):
        prompt_id = request.match_info["prompt_id"]
        self.history_polls += 1
        if prompt_id not in self.prompts or self.history_polls <= self.running_polls:
            return web.json_response({})
        made = self.produced.get(prompt_id, {})
        outputs = {
            key: {
                "images": [
                    {
                        "filename": made[key].name if key in made else self.output_name,
                        "subfolder": "",
                        "type": "output",
                    }
                ]
            }
            for key, node in self.prompts[prompt_id].items()
            if node["class_type"] == "DiffFERV_VideoCombine"
        }
        status = {"status_str": "success", "completed": True, "messages": []}
        return web.json_response({prompt_id: {"outputs": outputs, "status": status}})

    async def view(self, request):
        made = {path.name: path for files in self.produced.values() for path in files.values()}
        path = made.get(request.query.get("filename"), self.clip)
        return web.Response(body=path.read_bytes(), content_type="video/mp4")


def frame_of(index: int, size: int = 64) -> np.ndarray:
    """A stand-in's "edit" of the clip's frame `index`: uint8 [size, size, 3] that says which frame it is
    (its value steps with the index, a gradient across), the same whichever segment makes it."""
    ramp = np.arange(size, dtype=np.int64)[None, :, None]
    channels = np.array([7 * index, 3 * index + 50, 255 - 5 * index])[None, None, :]
    return ((channels + 2 * ramp) % 256).astype(np.uint8).repeat(size, axis=0)


class SegmentProducer:
    """What a stand-in makes of a prompt, as a server running a segment would: for each Video Combine of
    it, a video in the format asked of the frames Load Video picks (skip_first_frames, max_frames), each
    `frame_of` its index in the clip (the comparison: the frame beside itself), at `short_side` px."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.made = 0

    def __call__(self, prompt: dict) -> dict[str, Path]:
        load = next(n["inputs"] for n in prompt.values() if n["class_type"] == "DiffFERV_LoadVideo")
        size, first = load["short_side"], load["skip_first_frames"]
        frames = np.stack([frame_of(first + i, size) for i in range(load["max_frames"])])
        files = {}
        for key, node in prompt.items():
            if node["class_type"] != "DiffFERV_VideoCombine":
                continue
            spec = FORMATS[node["inputs"]["format"]]
            pixels = (
                np.concatenate([frames, frames], axis=2)
                if node["inputs"]["filename_prefix"].endswith("_compare")
                else frames
            )
            self.made += 1
            path = self.folder / f"made_{uuid.uuid4().hex}.{spec.extension}"  # servers share the folder
            write_video(path, torch.from_numpy(pixels).float() / 255, 25.0, spec, 65)
            files[key] = path
        return files
