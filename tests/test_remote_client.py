"""The client side of edits on servers, without ComfyUI: the server names and access headers, the job
list's checks, and `edit --server` against a small stand-in server (aiohttp, in a thread) that answers
the way a ComfyUI server does, but can be made hostile (an output named `../../x`), drop its event
socket in the middle of a job, or check a token. (The real servers are in test_remote.py.)"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from pathlib import Path

import pytest
from comfyui_diffferv.batch.command import main as batch_main
from comfyui_diffferv.batch.jobs import read_jobs
from comfyui_diffferv.headless.cli import InputRefusedError
from comfyui_diffferv.headless.server_check import upload_limit
from comfyui_diffferv.remote.errors import ServerRefusedError
from comfyui_diffferv.remote.runner import saved_file
from comfyui_diffferv.remote.server_api import display_url, read_headers, url_problem
from standin_server import TINY, StandIn, edit, tiny_output


def test_a_server_is_named_without_its_credentials():
    assert display_url("https://user:secret@gpu.example.com:8443/comfy/?token=abc#x") == (
        "https://gpu.example.com:8443/comfy"
    )
    assert display_url("http://[::1]:8188/") == "http://[::1]:8188"
    assert url_problem("http://gpu-box:8188") is None and url_problem("https://gpu-box") is None
    assert "is not an http:// or https:// URL with a host" in url_problem("gpu-box:8188")
    assert "is not an http:// or https:// URL with a host" in url_problem("ftp://gpu-box")
    assert "port" in url_problem("http://gpu-box:99999")


def test_a_headers_file_is_read_and_its_values_never_said(tmp_path):
    path = tmp_path / "headers.txt"
    path.write_text("# proxy keys\nCF-Access-Client-Id: abc\n\nCF-Access-Client-Secret:  s3cret \n")
    assert read_headers(path) == {"CF-Access-Client-Id": "abc", "CF-Access-Client-Secret": "s3cret"}
    path.write_text("X-Token: fine\nnot a header s3cret\n")
    with pytest.raises(ValueError) as error:
        read_headers(path)
    assert str(error.value) == "line 2 is not a header of the form 'Name: value'"


def test_the_upload_limit_is_read_off_the_servers_command_line():
    assert upload_limit(["main.py", "--listen"]) == 100 * 2**20  # ComfyUI's default
    assert upload_limit(["main.py", "--max-upload-size", "0.5"]) == 2**19
    assert upload_limit(["main.py", "--max-upload-size=2000"]) == 2000 * 2**20


@pytest.mark.parametrize(
    "saved",
    [
        {"filename": "../../x", "subfolder": "", "type": "output"},
        {"filename": "/etc/passwd", "subfolder": "", "type": "output"},
        {"filename": "..", "subfolder": "", "type": "output"},
        {"filename": "x.mp4", "subfolder": "../..", "type": "output"},
        {"filename": "x.mp4", "subfolder": "/etc", "type": "output"},
        {"filename": "x.mp4", "subfolder": "", "type": "input"},
    ],
)
def test_an_output_name_that_is_not_a_plain_file_name_is_refused(saved):
    with pytest.raises(ServerRefusedError, match="not a plain file name"):
        saved_file(saved)


def test_a_plain_output_name_is_taken():
    saved = {"filename": "edit_00001.mp4", "subfolder": "DiffFERV", "type": "output"}
    assert saved_file(saved) == saved


def job_list(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "jobs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_job_list_names_each_bad_line(tmp_path, demo_clip):
    """Every problem of the list at once, each with its line: a missing prompt, a flag of the batch
    command's, an output outside the output folder, a value out of range, two jobs writing one file, a
    start past the clip's end."""
    path = job_list(
        tmp_path,
        "# a comment, then a blank line",
        "",
        f"{demo_clip} 'a photo of a woman'",
        f"{demo_clip} 'a photo of a woman' 'a photo of an old woman' --server http://x:1",
        f"{demo_clip} 'a photo of a woman' 'a photo of an old woman' --output ../../escape.mp4",
        f"{demo_clip} 'a photo of a woman' 'a photo of an old woman' --output /tmp/abs.mp4",
        f"{demo_clip} 'a photo of a woman' 'a photo of an old woman' --steps 1",
        f"{demo_clip} 'a photo of a woman' 'a photo of an old woman' --output same.mp4",
        f"{demo_clip} 'a photo of a woman' 'a photo of a young woman' --output same.mp4",
        f"{demo_clip} 'a photo of a woman' 'a photo of an old woman' --start 2s --output late.mp4",
    )
    with pytest.raises(InputRefusedError) as refused:
        read_jobs(path, tmp_path / "out", [])
    lines = str(refused.value).splitlines()
    prefix = f"--jobs: {path} line"
    assert lines == [
        f'{prefix} 3: give VIDEO "SOURCE PROMPT" "EDIT PROMPT" first, then any edit flags',
        f"{prefix} 4: --server is not a job's flag (video and prompts come first; --server and the access flags "
        "are the batch command's; preview a clip with edit --preview)",
        f"{prefix} 5: --output ../../escape.mp4: give a name inside the output folder (no absolute path, no ..)",
        f"{prefix} 6: --output /tmp/abs.mp4: give a name inside the output folder (no absolute path, no ..)",
        f"{prefix} 7: --steps is 1; use a value from 2 to 1000 (50 is the paper's; 10 for a first try)",
        f"{prefix} 9 writes {tmp_path / 'out' / 'same.mp4'}, as line 8 does; give one of them another --output",
        f"{prefix} 10: --start 2 s is frame 50, too late in {demo_clip} (48 frames, 1.92 s at 25 fps): a video "
        "edit needs at least 2 frames, so start at frame 46 (1.84 s) or earlier",
    ]


def test_a_job_takes_the_batchs_flags_then_its_own(tmp_path, demo_clip):
    """Relative videos are taken from the list's folder; the default output is NNN_VIDEO.mp4 in the output
    folder; flags after `--` apply to every job and a line's own come after them."""
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(demo_clip.read_bytes())
    path = job_list(
        tmp_path,
        "clips/a.mp4 'a photo of a woman' 'a photo of an old woman'",
        "clips/a.mp4 'a photo of a woman' 'a photo of a man' --steps 4 --compare cmp/a.webm --report",
    )
    first, second = read_jobs(path, tmp_path / "out", ["--steps", "3", "--size", "128"])
    assert first.checked.video == tmp_path / "clips" / "a.mp4"
    assert (first.args.steps, first.args.size, second.args.steps, second.args.size) == (3, 128, 4, 128)
    assert first.outputs() == [tmp_path / "out" / "001_a.mp4"]
    assert second.outputs() == [
        tmp_path / "out" / "002_a.mp4",
        tmp_path / "out" / "cmp" / "a.webm",
        tmp_path / "out" / "002_a.report.json",
    ]
    assert first.key != second.key and first.name == "job 1 (a.mp4)"


def test_a_hostile_output_name_writes_nothing_outside_the_output_folder(tmp_path, demo_clip):
    """A server whose history names its output `../../x`: the edit fails saying so, and no file named x
    appears anywhere near (nor anything else besides the nothing-written output folder)."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    with StandIn(demo_clip, output_name="../../x") as server:
        status, _, stderr = edit("--server", server.url, *TINY, "--output", str(work / "edit.mp4"))
    assert status == 1
    assert stderr.strip().startswith("edit: --server: the server's answer names an output file '../../x'")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/b"]
    assert not (Path.cwd().parent.parent / "x").exists()


def test_the_job_is_followed_through_the_history_when_the_socket_drops(tmp_path, demo_clip):
    """The server's event socket closes at once: the edit follows the prompt through /queue ("running")
    and /history until it ends, and fetches its output."""
    produced = tiny_output(tmp_path)
    with StandIn(produced, drop_socket=True, running_polls=3) as server:
        status, stdout, stderr = edit("--server", server.url, *TINY, "--output", str(tmp_path / "edit.mp4"))
    assert status == 0, stderr
    assert server.history_polls > 3
    assert (tmp_path / "edit.mp4").read_bytes() == produced.read_bytes()
    assert stdout.rstrip().endswith("100% done")


def test_the_token_is_sent_and_never_said(tmp_path, demo_clip, monkeypatch):
    """--token-env: every request carries `Authorization: Bearer <token>`; neither the token nor the URL's
    password appears in the output, the status file or the error of a server that refuses it."""
    token = uuid.uuid4().hex
    monkeypatch.setenv("DIFFFERV_TOKEN", token)
    jobs = job_list(tmp_path, f"{demo_clip} 'a photo of a woman' 'a photo of an old woman'")
    stdout, stderr = io.StringIO(), io.StringIO()
    with StandIn(tiny_output(tmp_path), token=token) as server:
        url = server.url.replace("http://", "http://me:hunter2@")
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = batch_main(
                ["--jobs", str(jobs), "--server", url, "--token-env", "DIFFFERV_TOKEN", "--output-dir", str(tmp_path / "out"),
                 "--", *TINY]
            )  # fmt: skip
        paths = {path for path, _ in server.requests}
        assert {
            "/system_stats",
            "/diffferv/info",
            "/object_info",
            "/upload/image",
            "/prompt",
            "/view",
        } <= paths
        assert all(headers.get("Authorization") == f"Bearer {token}" for _, headers in server.requests)
        monkeypatch.setenv("DIFFFERV_TOKEN", "wrong")
        refused, _, said = edit(
            "--server", url, "--token-env", "DIFFFERV_TOKEN", *TINY, "--output", str(tmp_path / "e.mp4")
        )
    assert status == 0, stderr.getvalue()
    everything = (
        stdout.getvalue() + stderr.getvalue() + (tmp_path / "out" / "batch_status.json").read_text() + said
    )
    assert token not in everything and "hunter2" not in everything and "wrong" not in said.split("401")[0]
    assert refused == 2 and said.startswith(
        f"edit: --server: {server.url} refused GET /system_stats with HTTP 401"
    )


def test_a_job_the_server_refuses_is_said_in_flag_terms_once_and_not_retried(tmp_path, demo_clip):
    """The server's validator refuses one job of two: the batch says so once with the flag (--edit), records
    it failed, runs the other, and exits with 1; the refused prompt was sent once."""
    jobs = job_list(
        tmp_path,
        f"{demo_clip} 'a photo of a woman' 'a photo of an old woman'",
        f"{demo_clip} 'a photo of a woman' 'a photo of a forbidden woman'",
    )
    stdout, stderr = io.StringIO(), io.StringIO()
    with StandIn(tiny_output(tmp_path), refuse="forbidden") as server:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = batch_main(
                [
                    "--jobs",
                    str(jobs),
                    "--server",
                    server.url,
                    "--output-dir",
                    str(tmp_path / "out"),
                    "--",
                    *TINY,
                ]
            )
        posted = server.posted
    sentence = "--edit: the edit prompt may not say 'forbidden'"
    assert status == 1
    assert posted == ["a photo of an old woman", "a photo of a forbidden woman"]
    assert f"job 2 (talking_face.mp4) failed on {server.url}: {sentence}" in stdout.getvalue()
    assert stderr.getvalue() == f"batch: job 2 (talking_face.mp4): {sentence}\n"
    entries = json.loads((tmp_path / "out" / "batch_status.json").read_text())["jobs"].values()
    assert sorted((e["line"], e["state"], e.get("message")) for e in entries) == [
        (1, "done", None),
        (2, "failed", sentence),
    ]
    assert "1 of 2 jobs done" in stdout.getvalue()
