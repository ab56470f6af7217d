"""Servers that misbehave (issue 30), against the stand-in server: whatever a server answers, `edit --server`
and `batch` end in one sentence naming the server and the route (exit 2 before the upload, 1 after),
within their stated deadline (`--lost-after`, short here), write nothing outside the output folder, keep no
wrong output on resume, leave no prompt of theirs running and show or store no secret."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from aiohttp import web
from comfyui_diffferv.batch.lock import LOCK_FILE
from standin_server import TINY, StandIn, batch, edit, tiny_output

PYTHON_NAMES = re.compile(r"Traceback|\b[A-Z][A-Za-z]*(Error|Exception)\b|\bNone\b")
LOST_AFTER = ["--lost-after", "2"]


def answer(body, status=200, content_type="application/json"):
    """A route override answering `body` (JSON-encoded unless it is text)."""
    text = body if isinstance(body, str) else json.dumps(body)

    async def handler(request):
        return web.Response(text=text, status=status, content_type=content_type)

    return handler


HTML = answer(
    "<!DOCTYPE html><html><head><title>Sign in</title></head><body>login</body></html>", 200, "text/html"
)


def one_sentence(stderr: str) -> str:
    """The error's one line, checked free of Python's names."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert not PYTHON_NAMES.search(lines[0]), lines[0]
    return lines[0]


def run_edit(server: StandIn, tmp_path: Path, *extra: str) -> tuple[int, str, str, float]:
    started = time.monotonic()
    status, stdout, stderr = edit(
        "--server", server.url, *TINY, *LOST_AFTER, *extra, "--output", str(tmp_path / "out" / "e.mp4")
    )
    return status, stdout, stderr, time.monotonic() - started


BEFORE_UPLOAD = {
    "html login page": ("GET /system_stats", HTML, "an HTML page"),
    "a list": ("GET /system_stats", answer([]), "a JSON list where ComfyUI answers a JSON object"),
    "system as text": ("GET /system_stats", answer({"system": "x"}), "'system' as text"),
    "ram as text": ("GET /system_stats", answer({"system": {"ram_free": "lots"}}), "'ram_free' as text"),
    "devices of text": (
        "GET /system_stats",
        answer({"devices": ["cuda"]}),
        "an item of devices that is text",
    ),
    "infinite memory": (
        "GET /system_stats",
        answer('{"devices": [{"type": "cuda", "vram_free": Infinity}]}'),
        "'vram_free' as a number where a number belongs",
    ),
    "argv of numbers": ("GET /system_stats", answer({"system": {"argv": [1]}}), "an item of argv"),
    "info as list": ("GET /diffferv/info", answer([1]), "a JSON list"),
    "version a number": (
        "GET /diffferv/info",
        answer({"version": 3, "face_models": True}),
        "'version' as a number",
    ),
    "object_info text": ("GET /object_info", answer("ok", content_type="text/plain"), "text where"),
    "node entry text": (
        "GET /object_info",
        answer({"CheckpointLoaderSimple": "x"}),
        "text where ComfyUI answers",
    ),
    "combo text": (
        "GET /object_info",
        answer({"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": "abc"}}}}),
        "CheckpointLoaderSimple's ckpt_name as text",
    ),
    "cut-short JSON": ("GET /system_stats", answer('{"system": {"ram_fr'), "JSON that does not parse"),
    "deep JSON": ("GET /object_info", answer("[" * 100000 + "]" * 100000), "JSON nested deeper"),
    "null": ("GET /diffferv/info", answer("null"), "nothing where ComfyUI answers a JSON object"),
    "empty": ("GET /system_stats", answer("", 200, "text/plain"), "an empty answer where"),
}


@pytest.mark.parametrize("case", sorted(BEFORE_UPLOAD))
def test_a_wrong_answer_before_the_upload_is_one_sentence_and_exit_2(case, tmp_path, demo_clip):
    route, handler, said = BEFORE_UPLOAD[case]
    with StandIn(tiny_output(tmp_path), overrides={route: handler}) as server:
        status, _, stderr, _ = run_edit(server, tmp_path, "--video", str(demo_clip))
        uploads = [path for path, _ in server.requests if path == "/upload/image"]
    line = one_sentence(stderr)
    assert status == 2
    assert line.startswith(f"edit: --server: {server.url} answered {route} with"), line
    assert said in line, line
    assert uploads == [] and not (tmp_path / "out").exists()


def progress_frame(value) -> str:
    return '{"type": "progress", "data": {"prompt_id": "{id}", "value": VALUE, "max": 2}}'.replace(
        "VALUE", value
    )


AFTER_UPLOAD = {
    "upload answer a list": ("POST /upload/image", answer([]), "POST /upload/image with a JSON list", False),
    "upload name a number": ("POST /upload/image", answer({"name": 5}), "'name' as a number", False),
    "upload name a path": (
        "POST /upload/image",
        answer({"name": "../x.mp4"}),
        "not a plain file name",
        False,
    ),
    "prompt answer html": ("POST /prompt", HTML, "POST /prompt with an HTML page", True),
    "node errors text": ("POST /prompt", answer({"node_errors": "x"}), "'node_errors' as text", True),
    "history a list": ("GET /history", answer([]), "a JSON list where ComfyUI answers a JSON object", True),
}


@pytest.mark.parametrize("case", sorted(AFTER_UPLOAD))
def test_a_wrong_answer_after_the_upload_is_one_sentence_exit_1_and_our_prompt_cancelled(
    case, tmp_path, demo_clip
):
    route, handler, said, queued = AFTER_UPLOAD[case]
    with StandIn(tiny_output(tmp_path), drop_socket=True, overrides={route: handler}) as server:
        status, _, stderr, seconds = run_edit(server, tmp_path, "--video", str(demo_clip))
        cancelled = [path for path, _ in server.requests if path in ("/interrupt", "/queue")]
    line = one_sentence(stderr)
    assert status == 1 and seconds < 20
    assert line.startswith(f"edit: --server: {server.url}"), line
    assert said in line, line
    if queued:
        assert "/interrupt" in cancelled, server.requests
    assert not (tmp_path / "out" / "e.mp4").exists()


@pytest.mark.parametrize(
    ("frame", "said"),
    [
        ("[1, 2]", "its event socket with a JSON list"),
        ('{"type": "status", "data": "busy"}', "'data' as text"),
        (progress_frame('"abc"'), "'value' as text"),
        (progress_frame("Infinity"), "'value' as a number where a number belongs"),
        (progress_frame("-5"), "a progress of -5 of 2"),
        ("not json", "a message that is not JSON ComfyUI sends"),
        pytest.param("[" * 5000 + "]" * 5000, "a message that is not JSON ComfyUI sends", id="deep"),
    ],
)
def test_a_wrong_event_ends_in_one_sentence_and_cancels_the_prompt(frame, said, tmp_path, demo_clip):
    prompts: dict = {}

    async def socket(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for _ in range(50):
            if prompts:
                break
            await asyncio.sleep(0.05)
        await ws.send_str(frame.replace("{id}", next(iter(prompts), "")))
        await asyncio.sleep(30)
        return ws

    with StandIn(tiny_output(tmp_path), running_polls=10**6, overrides={"GET /ws": socket}) as server:
        prompts = server.prompts
        status, _, stderr, seconds = run_edit(server, tmp_path, "--video", str(demo_clip))
        paths = [path for path, _ in server.requests]
    line = one_sentence(stderr)
    assert status == 1 and seconds < 20
    assert said in line, line
    assert "/interrupt" in paths


def test_a_history_that_ends_without_outputs_or_reason_is_said(tmp_path, demo_clip):
    """A /history entry that is not "success" and has no messages: one sentence, not a silent exit 1; an
    executed output the history lacks: named."""

    async def history(request):
        prompt_id = request.match_info.get("prompt_id") or request.path.rsplit("/", 1)[1]
        return web.json_response(
            {prompt_id: {"status": {"status_str": "error", "completed": True, "messages": []}}}
        )

    with StandIn(tiny_output(tmp_path), drop_socket=True, overrides={"GET /history": history}) as server:
        status, _, stderr, _ = run_edit(server, tmp_path, "--video", str(demo_clip))
    line = one_sentence(stderr)
    assert status == 1 and "the prompt ended (error) without its outputs or a reason" in line

    async def no_outputs(request):
        prompt_id = request.path.rsplit("/", 1)[1]
        return web.json_response(
            {prompt_id: {"status": {"status_str": "success", "completed": True}, "outputs": {}}}
        )

    with StandIn(tiny_output(tmp_path), drop_socket=True, overrides={"GET /history": no_outputs}) as server:
        status, _, stderr, _ = run_edit(server, tmp_path, "--video", str(demo_clip))
    line = one_sentence(stderr)
    assert status == 1 and "GET /history (the output of node" in line and "with nothing" in line

    async def numbered_file(request):
        prompt_id = request.path.rsplit("/", 1)[1]
        files = {"images": [{"filename": 5, "subfolder": "", "type": "output"}]}
        outputs = {
            key: files
            for key, node in server.prompts[prompt_id].items()
            if "VideoCombine" in node["class_type"]
        }
        return web.json_response(
            {prompt_id: {"status": {"status_str": "success", "completed": True}, "outputs": outputs}}
        )

    with StandIn(
        tiny_output(tmp_path), drop_socket=True, overrides={"GET /history": numbered_file}
    ) as server:
        status, _, stderr, _ = run_edit(server, tmp_path, "--video", str(demo_clip))
    line = one_sentence(stderr)
    assert status == 1 and "members of other kinds than text (filename: a number, subfolder: an empty" in line


def dripping_view(headers_first: bool):
    """A /view that drips its file a byte every half second (or its headers never come)."""

    async def handler(request):
        if not headers_first:
            await asyncio.sleep(60)
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await response.prepare(request)
        for _ in range(200):
            await response.write(b"\0")
            await asyncio.sleep(0.5)
        return response

    return handler


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"GET /view": dripping_view(headers_first=True)}, "slower than 64 KiB/s"),
        ({"GET /view": dripping_view(headers_first=False)}, "did not answer GET /view (no answer in time)"),
    ],
)
def test_a_dripping_download_ends_within_its_deadline(overrides, said, tmp_path, demo_clip):
    with StandIn(tiny_output(tmp_path), overrides=overrides) as server:
        status, _, stderr, seconds = run_edit(server, tmp_path, "--video", str(demo_clip))
    line = one_sentence(stderr)
    assert status == 1 and said in line, line
    assert seconds < 12
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_silent_socket_falls_back_to_the_history(tmp_path, demo_clip):
    """An event socket that stays open, answers pings and says nothing: after --lost-after the history is
    asked, and the finished prompt's output fetched."""

    async def silent(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await asyncio.sleep(60)
        return ws

    with StandIn(tiny_output(tmp_path), overrides={"GET /ws": silent}) as server:
        status, _, stderr, seconds = run_edit(server, tmp_path, "--video", str(demo_clip))
    assert status == 0, stderr
    assert seconds < 12 and (tmp_path / "out" / "e.mp4").is_file()


def test_an_unanswered_socket_handshake_ends_after_lost_after(tmp_path, demo_clip):
    async def never(request):
        await asyncio.sleep(60)
        return web.Response()

    with StandIn(tiny_output(tmp_path), overrides={"GET /ws": never}) as server:
        status, _, stderr, seconds = run_edit(server, tmp_path, "--video", str(demo_clip))
    line = one_sentence(stderr)
    assert status == 1 and "did not open its event socket (no answer in time)" in line
    assert seconds < 8


def redirect_to(location: str, status: int = 302):
    async def handler(request):
        return web.Response(status=status, headers={"Location": location})

    return handler


def test_redirects_never_carry_headers_to_another_server(tmp_path, demo_clip):
    """A 302 on /system_stats or a 307 on /upload/image pointing at another host:port: refused, naming where
    it pointed; the other server never sees the --headers-file values nor the clip."""
    headers = tmp_path / "headers.txt"
    headers.write_text("X-Proxy-Key: s3cret-proxy-key\n")
    with StandIn(tiny_output(tmp_path)) as elsewhere:
        cases = [
            ({"GET /system_stats": redirect_to(elsewhere.url + "/system_stats")}, "GET /system_stats", 2),
            (
                {"POST /upload/image": redirect_to(elsewhere.url + "/upload/image", 307)},
                "POST /upload/image",
                1,
            ),
        ]
        for overrides, route, code in cases:
            with StandIn(tiny_output(tmp_path), overrides=overrides) as server:
                status, _, stderr, _ = run_edit(
                    server, tmp_path, "--video", str(demo_clip), "--headers-file", str(headers)
                )
            line = one_sentence(stderr)
            assert status == code
            assert (
                f"redirected {route} to {elsewhere.url}" in line and f"give --server {elsewhere.url}" in line
            )
        assert elsewhere.requests == []


def test_a_redirect_loop_within_the_server_ends(tmp_path, demo_clip):
    with StandIn(
        tiny_output(tmp_path), overrides={"GET /system_stats": redirect_to("/system_stats?again=1")}
    ) as server:
        status, _, stderr, _ = run_edit(server, tmp_path, "--video", str(demo_clip))
    assert status == 2 and "redirected GET /system_stats more than 3 times" in one_sentence(stderr)


@pytest.mark.parametrize(
    ("view", "said"),
    [
        (answer("<html>not found</html>", 200, "text/html"), "a text/html answer where a video file belongs"),
        (answer("x" * 5000, 200, "video/mp4"), "a file that is no video"),
        (answer("", 200, "video/mp4"), "an empty file"),
    ],
)
def test_a_download_that_is_not_the_edit_writes_nothing(view, said, tmp_path, demo_clip):
    with StandIn(tiny_output(tmp_path), overrides={"GET /view": view}) as server:
        status, _, stderr, _ = run_edit(server, tmp_path, "--video", str(demo_clip))
    line = one_sentence(stderr)
    assert status == 1 and said in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_download_of_another_clip_is_refused(tmp_path, demo_clip):
    """A real video, but not this edit's (the demo clip: 48 frames where the edit makes 2)."""
    with StandIn(demo_clip) as server:
        status, _, stderr, _ = run_edit(server, tmp_path, "--video", str(demo_clip))
    line = one_sentence(stderr)
    assert status == 1 and "a video of more than 2 frames where the edit makes 2" in line


def test_secrets_echoed_by_the_server_are_never_shown_or_stored(tmp_path, demo_clip, monkeypatch):
    """A server (or proxy) that echoes the request headers in its 400 answer: neither the token, the proxy
    key nor the URL's password appears on the terminal or in the status file."""
    token, key, password = "tok-7f3a9c2e", "key-51bd20aa", "pw-hunter22"
    monkeypatch.setenv("DIFFFERV_TOKEN", token)
    headers = tmp_path / "headers.txt"
    headers.write_text(f"X-Proxy-Key: {key}\n")

    async def echo(request):
        return web.Response(status=400, text=json.dumps(dict(request.headers)))

    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"{demo_clip} 'a photo of a woman' 'a photo of an old woman'\n")
    with StandIn(tiny_output(tmp_path), overrides={"POST /prompt": echo}) as server:
        url = server.url.replace("http://", f"http://me:{password}@")
        access = ["--token-env", "DIFFFERV_TOKEN", "--headers-file", str(headers)]
        e_status, e_out, e_err = edit(
            "--server", url, *access, *TINY, "--video", str(demo_clip), "--output", str(tmp_path / "e.mp4")
        )
        b_status, b_out, b_err = batch(
            "--jobs", str(jobs), "--server", url, *access, "--output-dir", str(tmp_path / "out"), "--", *TINY
        )
    said = e_out + e_err + b_out + b_err + (tmp_path / "out" / "batch_status.json").read_text()
    assert e_status == 1 and b_status == 1
    assert "X-Proxy-Key" in said  # the echo is shown, cut short
    for secret in (token, key, password):
        assert secret not in said


def job_file(tmp_path: Path, demo_clip: Path, *edits: str) -> Path:
    path = tmp_path / "jobs.txt"
    path.write_text("".join(f"{demo_clip} 'a photo of a woman' '{edit}'\n" for edit in edits))
    return path


def run_batch(tmp_path: Path, jobs: Path, *servers: StandIn) -> tuple[int, str, str]:
    urls = [word for server in servers for word in ("--server", server.url)]
    return batch("--jobs", str(jobs), *urls, *LOST_AFTER, "--output-dir", str(tmp_path / "out"), "--", *TINY)


def test_one_server_answering_nonsense_is_left_out_and_the_others_go_on(tmp_path, demo_clip):
    jobs = job_file(tmp_path, demo_clip, "a photo of an old woman")
    with (
        StandIn(tiny_output(tmp_path)) as good,
        StandIn(tiny_output(tmp_path), overrides={"GET /system_stats": answer([])}) as bad,
    ):
        status, stdout, stderr = run_batch(tmp_path, jobs, good, bad)
    assert status == 0, stderr
    assert f"server {bad.url} left out: {bad.url} answered GET /system_stats with a JSON list" in stderr
    assert "1 of 1 job done" in stdout


def test_a_server_whose_history_turns_to_nonsense_mid_job_is_left_out_its_job_requeued(tmp_path, demo_clip):
    """Server B's /history answers a list while it runs a job: B's prompt is cancelled, B is left out, its
    job runs on A, the status file records both jobs done."""
    jobs = job_file(tmp_path, demo_clip, "a photo of an old woman", "a photo of a young woman")
    with (
        StandIn(tiny_output(tmp_path), drop_socket=True, running_polls=2) as good,
        StandIn(tiny_output(tmp_path), drop_socket=True, overrides={"GET /history": answer([])}) as bad,
    ):
        status, stdout, stderr = run_batch(tmp_path, jobs, good, bad)
        bad_paths = [path for path, _ in bad.requests]
    assert status == 0, stdout + stderr
    assert "/interrupt" in bad_paths
    assert f"server {bad.url} was lost during" in stdout
    entries = json.loads((tmp_path / "out" / "batch_status.json").read_text())["jobs"].values()
    assert sorted((e["line"], e["state"], e["server"]) for e in entries) == [
        (1, "done", good.url),
        (2, "done", good.url),
    ]


def test_resume_never_keeps_a_wrong_output(tmp_path, demo_clip):
    """Lines swapped (default outputs follow the line numbers): both jobs run again; run unchanged: none;
    an output changed on disk: that job runs again."""
    with StandIn(tiny_output(tmp_path), drop_socket=True) as server:
        jobs = job_file(tmp_path, demo_clip, "a photo of an old woman", "a photo of a young woman")
        assert run_batch(tmp_path, jobs, server)[0] == 0
        jobs = job_file(tmp_path, demo_clip, "a photo of a young woman", "a photo of an old woman")
        status, stdout, _ = run_batch(tmp_path, jobs, server)
        assert status == 0 and "0 done in an earlier run, 2 to run" in stdout
        status, stdout, _ = run_batch(tmp_path, jobs, server)
        assert status == 0 and "2 done in an earlier run, 0 to run" in stdout
        first = next((tmp_path / "out").glob("001_*.mp4"))
        first.write_bytes(first.read_bytes() + b"\0")
        status, stdout, _ = run_batch(tmp_path, jobs, server)
        assert status == 0 and "1 done in an earlier run, 1 to run" in stdout
    old, young = "a photo of an old woman", "a photo of a young woman"
    assert server.posted == [old, young, young, old, young]


def test_a_second_batch_on_the_same_folder_is_refused_and_a_stale_lock_taken_over(tmp_path, demo_clip):
    jobs = job_file(tmp_path, demo_clip, "a photo of an old woman")
    lock = tmp_path / "out" / LOCK_FILE
    lock.parent.mkdir()
    lock.write_text(f"{os.getppid()} {os.uname().nodename}\n")  # a live process: a batch running
    with StandIn(tiny_output(tmp_path), drop_socket=True) as server:
        status, _, stderr = run_batch(tmp_path, jobs, server)
        assert status == 2 and f"another batch (process {os.getppid()} on" in one_sentence(stderr)
        assert server.posted == []
        lock.write_text(f"{2**22 + 7} {os.uname().nodename}\n")  # no such process: stale
        status, _, stderr = run_batch(tmp_path, jobs, server)
    assert status == 0, stderr
    assert not lock.exists()


def test_the_output_folder_removed_during_a_download_requeues_the_job(tmp_path, demo_clip):
    produced = tiny_output(tmp_path)
    removed = []

    async def view(request):
        if not removed:
            removed.append(True)
            shutil.rmtree(tmp_path / "out")
        return web.Response(body=produced.read_bytes(), content_type="video/mp4")

    jobs = job_file(tmp_path, demo_clip, "a photo of an old woman")
    with StandIn(produced, drop_socket=True, overrides={"GET /view": view}) as server:
        status, stdout, stderr = run_batch(tmp_path, jobs, server)
    assert status == 0, stdout + stderr
    assert removed and "it goes back to the queue" in stdout
    assert len(server.posted) == 2 and (tmp_path / "out" / "batch_status.json").is_file()


def test_secrets_are_masked_and_server_text_cut_short():
    from comfyui_diffferv.remote.answers import Secrets

    secrets = Secrets(["Bearer tok-123456", "key-abcdef", "Basic bWU6cHctaHVudGVyMjI="])
    assert secrets.mask("a tok-123456 b\nkey-abcdef c bWU6cHctaHVudGVyMjI=") == "a *** b *** c ***"
    assert secrets.mask_all({"echo": ["Bearer tok-123456", "tok-123456!"]}) == {"echo": ["***", "***!"]}
    shown = secrets.mask("x" * 1000)
    assert len(shown) == 300 and shown.endswith("...")


def test_the_pack_route_tries_the_face_models_once_and_says_no_path(comfy, monkeypatch):
    from comfyui_diffferv.nodes import server_info

    calls = []

    def missing() -> str:
        calls.append(1)
        return "/home/someone/models/shape_predictor_68_face_landmarks.dat: file not found"

    monkeypatch.setattr(server_info, "missing_reason", missing)
    server_info.face_models_load.cache_clear()
    try:
        assert server_info.face_models_load() is False and server_info.face_models_load() is False
        assert calls == [1]
    finally:
        server_info.face_models_load.cache_clear()
