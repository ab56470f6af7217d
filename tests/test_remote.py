"""Edits on ComfyUI servers, with real servers: ComfyUI's main.py on loopback ports, on the CPU, with this
pack and the random-weight full-size SD1.5 checkpoint, at a tiny size. `edit --server` against the
in-process `edit`; `batch` over two servers, with one of them killed in the middle of a job, with
Ctrl-C and a second run; servers that lack the pack, the checkpoint or room for the upload; and a hostile
server's answer."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from comfy_harness import ComfyServer, run_edit
from comfyui_diffferv.headless.cli import InputRefusedError
from comfyui_diffferv.headless.server_check import upload_clip
from comfyui_diffferv.headless.workflow import CHECKPOINT
from comfyui_diffferv.remote.server_api import ServerApi
from conftest import ROOT
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
    # under the shipped workflow's name: the servers have what `edit` and `batch` ask for by default
    (folder / "checkpoints" / CHECKPOINT).symlink_to(sd15_checkpoint)
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
        "--server", server.url, *TINY, *EDIT,
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


def uploaded(server: ComfyServer) -> list[Path]:
    """The files in the server's input folder (where uploads go; ComfyUI makes empty subfolders)."""
    return [path for path in (server.workdir / "input").rglob("*") if path.is_file()]


def write_jobs(folder: Path, clip: Path, count: int) -> Path:
    """A job list of `count` edits of copies of `clip` (each its own file, as a batch of clips has)."""
    lines = ["# video, source prompt, edit prompt, flags"]
    for number in range(count):
        copy = folder / f"clip{number}{clip.suffix}"
        shutil.copy(clip, copy)
        edit = ["old", "young", "smiling", "sad"][number % 4]
        lines.append(f'{copy.name} "a photo of a woman" "a photo of a {edit} woman" --guidance {3 + number}')
    path = folder / "jobs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def batch(*arguments: str, **popen) -> subprocess.Popen | subprocess.CompletedProcess:
    """The `batch` command as a user runs it; with `popen` (e.g. stdout=PIPE) it is started, not waited for."""
    command = [sys.executable, str(ROOT), "batch", *arguments]
    if popen:
        return subprocess.Popen(command, text=True, cwd=ROOT, **popen)
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


def tiny_batch(jobs: Path, output: Path, *servers: ComfyServer, more: tuple[str, ...] = ()) -> list[str]:
    arguments = ["--jobs", str(jobs), "--output-dir", str(output), *more]
    for server in servers:
        arguments += ["--server", server.url]
    return [*arguments, "--", *TINY]


def statuses(output: Path) -> dict:
    return {
        entry["line"]: entry
        for entry in json.loads((output / "batch_status.json").read_text())["jobs"].values()
    }


def test_four_jobs_over_two_servers(two_servers, demo_clip, tmp_path):
    """Four jobs over two servers: each server checked and used, every job run once (four prompts in
    the servers' histories together), every output there, the status file says each is done."""
    before = [len(prompts_run(server)) for server in two_servers]
    jobs = write_jobs(tmp_path, demo_clip, 4)
    result = batch(*tiny_batch(jobs, tmp_path / "out", *two_servers))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith(f"4 jobs in {jobs}: 0 done in an earlier run, 4 to run\n")
    for server in two_servers:
        assert f"server {server.url}: ready (no CUDA GPU; " in result.stdout
    ran = [len(prompts_run(server)) - count for server, count in zip(two_servers, before, strict=True)]
    assert sum(ran) == 4 and min(ran) >= 1, ran
    made = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert made == ["002_clip0.mp4", "003_clip1.mp4", "004_clip2.mp4", "005_clip3.mp4", "batch_status.json"]
    for name in made[:-1]:
        assert probe(tmp_path / "out" / name).frames.shape == (2, 64, 64, 3)
    entries = statuses(tmp_path / "out")
    assert sorted(entries) == [2, 3, 4, 5] and {entry["state"] for entry in entries.values()} == {"done"}
    assert {entry["server"] for entry in entries.values()} == {server.url for server in two_servers}
    assert "4 of 4 jobs done" in result.stdout


def wait_until(condition, timeout: float = 300.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("the condition did not come true")


def running_prompt(server: ComfyServer) -> str | None:
    """The id of the prompt the server is running, if any."""
    try:
        running = requests.get(server.url + "/queue", timeout=5).json()["queue_running"]
    except requests.RequestException:
        return None
    return running[0][1] if running else None


def test_a_server_killed_during_a_job_loses_nothing(two_servers, models, demo_clip, tmp_path):
    """A third server is killed (SIGKILL) while it runs a job: that job goes back to the queue and the
    other server runs it; every output is there and every job is done once."""
    (doomed,) = start_servers([tmp_path / "doomed"], models)
    try:
        jobs = write_jobs(tmp_path, demo_clip, 3)
        process = batch(
            *tiny_batch(jobs, tmp_path / "out", two_servers[0], doomed, more=("--lost-after", "5")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        killed = wait_until(lambda: running_prompt(doomed))
        doomed.process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        doomed.stop()
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert f"server {doomed.url} was lost during job" in stdout and "the job goes back to the queue" in stdout
    entries = statuses(tmp_path / "out")
    assert sorted(entries) == [2, 3, 4] and {entry["state"] for entry in entries.values()} == {"done"}
    assert {entry["server"] for entry in entries.values()} == {two_servers[0].url}
    for entry in entries.values():
        assert probe(tmp_path / "out" / entry["outputs"][0]["name"]).frames.shape == (2, 64, 64, 3)
    assert killed not in prompts_run(two_servers[0])  # the job ran again under a new prompt


def test_ctrl_c_then_a_second_run_skips_the_finished_jobs(two_servers, demo_clip, tmp_path):
    """Ctrl-C while the second of three jobs runs: the batch cancels that prompt on its server (the
    server's history says interrupted) and exits with 130, the first job recorded done; the same command
    again runs only the other two."""
    server = two_servers[1]
    jobs = write_jobs(tmp_path, demo_clip, 3)
    arguments = tiny_batch(jobs, tmp_path / "out", server)
    process = batch(*arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: (tmp_path / "out" / "batch_status.json").is_file())
    cancelled = wait_until(lambda: running_prompt(server))
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout[-3000:] + stderr[-3000:]
    assert "the running jobs were cancelled on their servers" in stderr
    history = wait_until(lambda: requests.get(f"{server.url}/history/{cancelled}", timeout=5).json())
    assert history[cancelled]["status"]["status_str"] == "error"
    assert [event for event, _ in history[cancelled]["status"]["messages"]][-1] == "execution_interrupted"
    assert [entry["line"] for entry in statuses(tmp_path / "out").values()] == [2]
    again = batch(*arguments)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.startswith(f"3 jobs in {jobs}: 1 done in an earlier run, 2 to run\n")
    assert sorted(statuses(tmp_path / "out")) == [2, 3, 4]
    assert "3 of 3 jobs done" not in again.stdout and "2 of 2 jobs done" in again.stdout


def test_servers_lacking_the_pack_or_the_checkpoint_are_refused_before_any_upload(demo_clip, tmp_path):
    """A server without the pack and one with it but without the checkpoint: each named with what it
    lacks, the batch refused (status 2) and nothing uploaded to either; `edit --server` says the same."""
    bare, empty = (
        ComfyServer(tmp_path / "bare", pack=False).launch(),
        ComfyServer(tmp_path / "empty").launch(),
    )
    try:
        bare.ready(), empty.ready()
        jobs = write_jobs(tmp_path, demo_clip, 2)
        result = batch(*tiny_batch(jobs, tmp_path / "out", bare, empty))
        edit = run_edit("--server", empty.url, *TINY, "--output", str(tmp_path / "edit.mp4"))
    finally:
        bare.stop(), empty.stop()
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    said = result.stderr
    assert f"{bare.url} left out: it lacks the pack comfyui-diffferv (install it there" in said
    assert (
        f"{empty.url} left out: it lacks the checkpoint v1-5-pruned-emaonly-fp16.safetensors (put it in"
        in said
    )
    assert "batch: --server: no server can run the jobs:" in said
    assert not uploaded(bare) and not uploaded(empty)
    assert not (tmp_path / "out" / "batch_status.json").exists()
    assert edit.returncode == 2 and edit.stderr.startswith(
        f"edit: --server: {empty.url} lacks the checkpoint v1-5-pruned-emaonly-fp16.safetensors"
    ), edit.stderr


def test_an_upload_over_the_servers_limit_is_said_in_one_sentence(models, demo_clip, tmp_path):
    """A server started with --max-upload-size 0.01 (MB): `edit --server` refuses before uploading, in
    one sentence with the flag that raises the limit; the server's own 413, had the upload been sent,
    is said the same way."""
    (small,) = start_servers([tmp_path / "small"], models, "--max-upload-size", "0.01")
    try:
        result = run_edit("--server", small.url, *TINY, "--output", str(tmp_path / "e.mp4"))

        async def upload():
            async with ServerApi(small.url) as api:
                return await upload_clip(api, demo_clip, "--video")

        with pytest.raises(InputRefusedError) as refused:
            asyncio.run(upload())
    finally:
        small.stop()
    size = demo_clip.stat().st_size
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == (
        f"edit: --video: {demo_clip} is {size / 2**20:.2f} MB and the server {small.url} takes uploads up to "
        f"0.01 MB; start that server with --max-upload-size {-(-size // 2**20) + 1} (MB) or more\n"
    )
    assert str(refused.value).startswith(
        f"--video: {demo_clip} is "
    ) and "refused it as too large (HTTP 413)" in str(refused.value)
    assert not uploaded(small)
