"""Edits on ComfyUI servers, with real servers: ComfyUI's main.py on loopback ports, on the CPU, with this
pack and the random-weight full-size SD1.5 checkpoint, at a tiny size. `edit --server` against the
in-process `edit`; `batch` over two servers, with one of them killed in the middle of a job, with
Ctrl-C and a second run; servers that lack the pack, the checkpoint or room for the upload; and a hostile
server's answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from comfy_harness import ComfyServer, run_edit
from video_probe import probe

pytestmark = pytest.mark.slow

TINY = ("--frames", "2", "--size", "64", "--steps", "2", "--window", "0", "--cache-mode", "recompute")
"""The edit the tests run: 2 frames at 64 px, 2 + 2 steps, one batch, the same cache mode everywhere."""
EDIT = ("--source", "a photo of a woman", "--edit", "a photo of an old woman")


def start_servers(
    workdirs: list[Path], models: Path | None, *flags: str, pack: bool = True
) -> list[ComfyServer]:
    """ComfyUI servers started side by side (each takes its own seconds to start)."""
    servers = [ComfyServer(workdir, models_dir=models, pack=pack).launch(*flags) for workdir in workdirs]
    return [server.ready() for server in servers]


@pytest.fixture(scope="module")
def models(tmp_path_factory, sd15_checkpoint) -> Path:
    folder = tmp_path_factory.mktemp("models")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / sd15_checkpoint.name).symlink_to(sd15_checkpoint)
    (folder / "unet").mkdir()
    return folder


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory, models):
    servers = start_servers(
        [tmp_path_factory.mktemp("server_a"), tmp_path_factory.mktemp("server_b")], models
    )
    yield servers
    for server in servers:
        server.stop()


def prompts_run(server: ComfyServer) -> list[str]:
    """The ids of the prompts the server has run (its history)."""
    return list(requests.get(server.url + "/history", timeout=10).json())


def test_edit_on_a_server_gives_the_frames_of_the_edit_here(
    two_servers, sd15_checkpoint, demo_clip, tmp_path
):
    """`edit --server` runs the same workflow with the same settings as the in-process `edit`: the same
    plan, and byte for byte the same frames; the clip is uploaded, the outputs fetched to the paths
    given, the report's JSON beside the video."""
    server = two_servers[0]
    here, there = tmp_path / "here.mp4", tmp_path / "there.mp4"
    local = run_edit("--checkpoint", str(sd15_checkpoint), *TINY, *EDIT, "--output", str(here))
    assert local.returncode == 0, local.stderr[-3000:]
    remote = run_edit(
        "--server", server.url, "--checkpoint", sd15_checkpoint.name, *TINY, *EDIT,
        "--output", str(there), "--compare", str(tmp_path / "there_compare.mp4"), "--report",
    )  # fmt: skip
    assert remote.returncode == 0, remote.stderr[-3000:]
    plan = remote.stdout.split("\n[", 1)[0]
    assert plan.startswith(f"plan:\n  server: {server.url}\n")
    assert plan.split("\n", 2)[2] == local.stdout.split("\n[", 1)[0].split("\n", 1)[1]  # the same plan
    lines = [line for line in remote.stdout.splitlines() if line.startswith("[")]
    assert any("% inversion" in line for line in lines) and any("% sampling" in line for line in lines)
    assert lines[-1].endswith("100% done")
    assert (probe(there).frames == probe(here).frames).all()
    assert probe(tmp_path / "there_compare.mp4").frames.shape == (2, 64, 128, 3)
    assert json.loads((tmp_path / "there.report.json").read_text())["frames"] == 2
    assert (server.workdir / "input" / demo_clip.name).read_bytes() == demo_clip.read_bytes()
