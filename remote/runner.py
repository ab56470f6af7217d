"""A workflow run on a ComfyUI server: the second executor beside the in-process one (comfyhost/runner.py),
with the same contract (comfyhost/executor.py): `run_on_server` validates and executes an API-form workflow
and returns {node id: ui output}, raising `PromptError` with ComfyUI's own messages when the server refuses,
fails or interrupts it, and calling the same progress hooks; `fetch_outputs` brings the files back.

Progress comes from the server's events on its WebSocket (`executing`, `progress`, the end events). When
the socket drops, the run is followed through `GET /history/{id}` (and `GET /queue`), and the socket is
reopened when it can be; a server that answers nothing for `lost_after` seconds, or that no longer knows
the prompt (it restarted), raises `server_api.ServerLostError`, and the batch dispatcher runs the job
elsewhere. There is no limit on how long a job may run. Cancelling the run (Ctrl-C) cancels its prompt
on the server, and only its prompt.

Output file names come from the server and are not trusted: a name that is not a plain file name is
refused, and the files are written under names the caller chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..comfyhost.executor import NodeHook, ProgressHook, PromptError, failure, validation_problems
from .answers import Origin, ServerAnswerError, described, field, items, obj
from .errors import ServerError, ServerLostError, ServerRefusedError
from .server_api import PLAIN_NAME, next_event

LOST_AFTER = 30.0
"""Seconds without any answer from a server (its socket gone, its API not answering) after which a
running job counts as lost."""
DOWNLOAD_LIMIT = 2**32
"""Bytes an output file may have when the caller knows no smaller bound (`EditJob.output_limit`)."""
POLL = 1.0
"""Seconds between history requests while the event socket is down."""
END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


async def run_on_server(
    api,
    prompt: dict,
    on_progress: ProgressHook | None = None,
    on_node: NodeHook | None = None,
    lost_after: float = LOST_AFTER,
) -> dict:
    """Queue `prompt` on the server (`server_api.ServerApi`) and follow it to its end; returns its
    outputs. Like the in-process runner, nothing runs when any node fails validation (the server would
    run the outputs that passed: such a prompt is taken off its queue)."""
    client_id = uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())  # chosen here, so a cancel can name it even while it is being queued
    socket = await api.socket(client_id)
    try:
        try:
            left_out = await api.queue(prompt, client_id, prompt_id)
        except ServerRefusedError as refused:
            raise rejected(api, prompt, refused) from None
        except BaseException:  # it may have been queued: a run of ours never outlives the client
            await asyncio.shield(quietly_cancel(api, prompt_id))
            raise
        if left_out:
            await api.cancel(prompt_id)
            raise PromptError.reported("validation", server_problems(api, prompt, None, left_out))
        try:
            entry = await follow(api, socket, client_id, prompt_id, on_progress, on_node, lost_after)
        except BaseException:  # Ctrl-C, a server that stopped making sense, a crash: cancel our prompt
            await asyncio.shield(quietly_cancel(api, prompt_id))
            raise
    finally:
        if not socket.closed:
            await socket.close()
    return outcome(api, prompt_id, entry)


def outcome(api, prompt_id: str, entry: dict) -> dict:
    """The outputs of an ended prompt's history entry, or the PromptError of its failure; an entry that
    says neither is a ServerAnswerError."""
    status = entry.get("status", {})
    if status.get("status_str") == "success":
        return entry.get("outputs", {})
    where = Origin(api.name, f"GET /history/{prompt_id}")
    try:
        error = failure(status.get("messages", []))
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        raise where.error("status messages that are not ComfyUI's") from None
    if not error.problems:
        said = status.get("status_str") or "no status"
        raise where.error(f"the prompt ended ({said[:40]}) without its outputs or a reason")
    raise error


def server_problems(api, prompt: dict, error: object, node_errors: object) -> list:
    """`validation_problems` of a server's answer, or a ServerAnswerError when it is not ComfyUI's."""
    try:
        return validation_problems(prompt, error, node_errors)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise Origin(api.name, "POST /prompt").error("node errors that are not ComfyUI's") from None


def rejected(api, prompt: dict, refused: ServerRefusedError) -> Exception:
    """A refused POST /prompt as a validation PromptError (ComfyUI's 400 holds `error` and
    `node_errors`), or the refusal itself when it is something else (e.g. a proxy's 401)."""
    try:
        body = json.loads(refused.body)
    except (ValueError, RecursionError):
        return refused
    if not isinstance(body, dict) or "error" not in body:
        return refused
    return PromptError.reported(
        "validation", server_problems(api, prompt, body["error"], body.get("node_errors", {}))
    )


async def quietly_cancel(api, prompt_id: str) -> None:
    """Cancel the prompt if the server still answers (it may be the reason we stop)."""
    with contextlib.suppress(ServerError, asyncio.TimeoutError):
        await asyncio.wait_for(api.cancel(prompt_id), timeout=10)


async def follow(api, socket, client_id, prompt_id, on_progress, on_node, lost_after) -> dict:
    """Follow the prompt to its end: from its events while the socket lives, else from its history and
    the queue until the socket reopens; returns its history entry."""
    while True:
        entry = await from_events(api, socket, prompt_id, on_progress, on_node, lost_after)
        if not socket.closed:
            await socket.close()
        if entry is not None:
            return entry
        entry, socket = await from_history(api, client_id, prompt_id, lost_after)
        if entry is not None:
            return entry


async def from_events(api, socket, prompt_id, on_progress, on_node, lost_after) -> dict | None:
    """The prompt's events, passed to the hooks, up to its end (its history entry then); None when the
    socket drops first or stays silent for `lost_after` seconds (the history is asked then)."""
    where = Origin(api.name, "its event socket")
    while True:
        try:
            event = await asyncio.wait_for(next_event(api, socket), lost_after)
        except asyncio.TimeoutError:
            return None
        if event is None:
            return None
        data = event.get("data", {})
        if data.get("prompt_id") != prompt_id:
            continue
        kind = event["type"]
        if kind == "executing" and data.get("node") is not None and on_node is not None:
            on_node(str(data["node"])[:80])
        elif kind == "progress" and on_progress is not None:
            value, most = field(data, "value", float, where, 0.0), field(data, "max", float, where, 0.0)
            if not 0 <= value <= 1e12 or not 0 <= most <= 1e12:
                raise where.error(f"a progress of {value:g} of {most:g}")
            on_progress(int(min(value, most)), int(most), str(data.get("node"))[:80])
        elif kind in END_EVENTS:
            return await ended_entry(api, prompt_id, lost_after)


async def ended_entry(api, prompt_id: str, lost_after: float) -> dict:
    """The history entry of a prompt whose end event came (written just after the event is sent)."""
    deadline = time.monotonic() + lost_after
    while True:
        entry = await api.history(prompt_id)
        if entry is not None:
            return entry
        if time.monotonic() > deadline:
            raise ServerLostError(
                f"{api.name} announced the end of prompt {prompt_id} but keeps no history of it"
            )
        await asyncio.sleep(0.1)


async def from_history(api, client_id, prompt_id, lost_after):
    """While the socket is down: (the history entry, None) once the prompt has ended, or (None, a new
    socket) once one opens while it runs. Raises ServerLostError after `lost_after` seconds without an
    answer, or when the server no longer has the prompt anywhere."""
    last_answer = time.monotonic()
    while True:
        try:
            entry = await api.history(prompt_id)
            if entry is not None:
                return entry, None
            waiting = await api.waiting()
            last_answer = time.monotonic()
        except ServerAnswerError:
            raise
        except ServerLostError:
            if time.monotonic() - last_answer > lost_after:
                raise
            await asyncio.sleep(POLL)
            continue
        if prompt_id not in waiting:
            entry = await api.history(prompt_id)  # it may have ended in between
            if entry is not None:
                return entry, None
            raise ServerLostError(f"{api.name} no longer has prompt {prompt_id} (did it restart?)")
        try:
            return None, await api.socket(client_id)
        except ServerLostError:
            await asyncio.sleep(POLL)


SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def saved_file(saved: dict) -> dict:
    """A ui entry {"filename", "subfolder", "type"} from a server's answer, checked: a plain file name
    (no folder, not `..`), a relative subfolder without `..`, an output or temp file. Raises
    ServerRefusedError otherwise (the server's answer is not used)."""
    name, subfolder, kind = saved.get("filename", ""), saved.get("subfolder", ""), saved.get("type", "")
    if not all(isinstance(value, str) for value in (name, subfolder, kind)):
        raise ServerAnswerError(f"the server's answer names an output file with {described_entry(saved)}")
    parts = [part for part in re.split(r"[/\\]", subfolder) if part]
    if (
        not PLAIN_NAME.match(name)
        or name in (".", "..")
        or subfolder.startswith(("/", "\\"))
        or ".." in parts
        or kind not in ("output", "temp")
    ):
        raise ServerRefusedError(
            f"the server's answer names an output file {name[:80]!r} in {subfolder[:80]!r} ({kind[:20]!r}) that is not a "
            "plain file name in its output folder; nothing was fetched",
            0,
        )
    return {"filename": name, "subfolder": subfolder, "type": kind}


def described_entry(saved: dict) -> str:
    """What a file entry's members are, in words (`answers.described`), for the message."""
    said = ", ".join(f"{str(key)[:20]}: {described(value)}" for key, value in saved.items())
    return f"members of other kinds than text ({said})"


async def fetch_file(api, saved: dict, folder: Path, stem: str, limit: int) -> Path:
    """Download one output named in the server's answer into `folder` as `stem` + its suffix (the
    server's name chooses nothing else), at most `limit` bytes."""
    checked = saved_file(saved)
    suffix = Path(checked["filename"]).suffix
    target = folder / (stem + (suffix if SUFFIX.match(suffix) else ""))
    await api.download(checked, target, limit)
    return target


def first_file(api, outputs: dict, node_id: str) -> dict:
    """The first file the output node `node_id` saved, as the history names it (a ServerAnswerError when
    the history has no file of that node)."""
    where = Origin(api.name, "GET /history (its outputs)")
    node = obj(outputs.get(node_id), Origin(api.name, f"GET /history (the output of node {node_id})"))
    files = items(field(node, "images", list, where, []), dict, where, f"node {node_id}'s files")
    if not files:
        raise where.error(f"no file of node {node_id}, the edit's Video Combine")
    return files[0]


async def fetch_outputs(
    api, outputs: dict, wanted: dict[str, str], folder: Path, limit: int = DOWNLOAD_LIMIT
) -> dict[str, Path]:
    """The first file each node of `wanted` (node id -> a key, e.g. its filename prefix) saved, fetched
    into `folder` (at most `limit` bytes each); returns key -> the local file."""
    return {
        key: await fetch_file(api, first_file(api, outputs, node_id), folder, f"output{index}", limit)
        for index, (node_id, key) in enumerate(wanted.items())
    }


@dataclass
class RemoteExecutor:
    """The executor contract (``comfyhost.executor.Executor``) kept by a ComfyUI server: `api` (a
    ``server_api.ServerApi``), a prompt followed with `lost_after` seconds of silence allowed, the clip put
    there by `upload` (the command's, which says a refusal in its terms; default: a plain upload), each
    output at most `download_limit` bytes and held to `check` (the command's: why a file cannot be the
    job's output, None when it can) before anything is written."""

    api: object
    lost_after: float = LOST_AFTER
    upload: Callable[[Path], Awaitable[str]] | None = None
    download_limit: int = DOWNLOAD_LIMIT
    check: Callable[[Path], str | None] | None = None

    async def put_clip(self, video: Path) -> str:
        if self.upload is not None:
            return await self.upload(video)
        return await self.api.upload(video, video.name)

    async def run(self, prompt: dict, on_progress: ProgressHook | None, on_node: NodeHook | None) -> dict:
        return await run_on_server(self.api, prompt, on_progress, on_node, lost_after=self.lost_after)

    async def fetch(self, outputs: dict, wanted: dict[str, str], folder: Path) -> dict[str, Path]:
        fetched = await fetch_outputs(self.api, outputs, wanted, folder, self.download_limit)
        for key, path in fetched.items():
            problem = self.check(path) if self.check is not None else None
            if problem:
                for other in fetched.values():
                    other.unlink(missing_ok=True)
                raise ServerAnswerError(f"{self.api.name} sent, for the output {key}, {problem}")
        return fetched
