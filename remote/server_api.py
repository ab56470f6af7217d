"""A ComfyUI server driven over its HTTP and WebSocket API, the one its browser client, comfy-cli and the
multi-machine tools use: `POST /upload/image`, `POST /prompt`, `/ws?clientId=` events, `GET /history/{id}`,
`GET /view`, `POST /interrupt` and `POST /queue` (cancel one prompt), `GET /object_info`,
`GET /system_stats`, and the pack's own `GET /diffferv/info` (nodes/server_info.py).

`ServerApi` is one server: an http(s) URL and the extra request headers a server behind an authenticating
proxy wants (a token; they are sent, never printed: the server is always named by `display_url`, without
credentials). What goes wrong is one of the errors of errors.py: `ServerLostError` when the server does
not answer (refused or dropped connection, a timeout, a proxy's 502/503/504, any 5xx) or answers what no
ComfyUI server answers (`answers.ServerAnswerError`), which the batch dispatcher takes as "run the job
elsewhere", and `ServerRefusedError` when it answers no (a 4xx, a redirect it will not follow), which it
does not retry. Every wait is bounded by the timeout (`--lost-after`); redirects stay within the server's
origin; every secret sent is masked in what the server says back. aiohttp is ComfyUI's own HTTP library
(in every ComfyUI environment); it is imported when a `ServerApi` opens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from .answers import Origin, Secrets, ServerAnswerError, field, items, obj
from .errors import ServerLostError, ServerRefusedError

REQUEST_TIMEOUT = 30.0
"""Seconds one request (not a job: a job may take hours) may take before the server counts as lost."""
HEARTBEAT = 10.0
"""Seconds between WebSocket pings; a server that does not answer one is taken as gone."""
MIN_RATE = 64 * 2**10
"""Bytes per second an upload or a download must average, after its first `timeout` seconds."""
MAX_ANSWER = 256 * 2**20
"""Bytes a JSON or text answer may have (ComfyUI's largest, /object_info with many packs, is a few MB)."""
MAX_REDIRECTS = 3
"""Redirects followed within a server's origin (GET only)."""
REDIRECTS = (301, 302, 303, 307, 308)
PLAIN_NAME = re.compile(r"^[^/\\\x00]+$")
"""A file name without folders."""

ACCESS_ADVICE = (
    " (give the server's token with --token-env VAR, or its proxy's headers with --headers-file FILE)"
)


def display_url(url: str) -> str:
    """The server's URL as it may be printed or written: scheme, host, port and path, without any user,
    password, query or fragment (where a token might hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.netloc.rpartition("@")[2][len(host) :].lstrip(":") if host else ""
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def url_problem(url: str) -> str | None:
    """Why `url` cannot name a ComfyUI server (None when it can): it must be http:// or https:// with a
    host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{display_url(url) or url!r} is not an http:// or https:// URL with a host (e.g. http://gpu-box:8188)"
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return f"{display_url(url)} has a port that is not a number from 1 to 65535"
    return None


def read_headers(path: Path) -> dict[str, str]:
    """Extra request headers from a file, one `Name: value` a line (blank lines and `#` comments skipped).
    Raises ValueError naming the line (never its value) when a line is not a header."""
    headers = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or not value.strip() or any(c.isspace() for c in name.strip()):
            raise ValueError(f"line {number} is not a header of the form 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


class ServerApi:
    """One ComfyUI server; use as `async with ServerApi(url, headers) as api:`. `url`: http(s)://host:port
    (a path prefix is kept, for a server behind a proxy at a sub-path; a user and password in it are sent
    as HTTP Basic authorization unless `headers` hold an Authorization). `headers`: sent with every
    request and the WebSocket's handshake, never to another origin (redirects there are refused).
    `timeout`: the seconds any request, the socket's handshake and each wait for data may take (an
    upload or a download: the seconds plus what its size needs at MIN_RATE)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = REQUEST_TIMEOUT):
        parts = urlsplit(url)
        self.name = display_url(url)
        self.base = self.name  # credentials in the URL travel as a header, not in the address
        self.headers = dict(headers or {})
        secret = list(self.headers.values())
        if parts.username is not None:
            secret.append(unquote(parts.password or ""))
            if "Authorization" not in self.headers:
                pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
                self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
                secret.append(self.headers["Authorization"])
        self.secrets = Secrets(secret)
        self.timeout = timeout
        self.session = None

    def __repr__(self) -> str:  # never shows the headers
        return f"ServerApi({self.name})"

    async def __aenter__(self) -> ServerApi:
        import aiohttp

        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def request(
        self, method: str, path: str, *, data=None, json_body=None, params=None, read=True, sending: int = 0
    ):
        """One request; returns the answer's body (JSON decoded, every secret in it masked, when it is
        JSON; else its text), raising ServerLostError, ServerAnswerError or ServerRefusedError. `read`
        False returns the open response (for a download; the caller releases it). `sending`: the bytes of
        `data` (an upload), which may take their time at MIN_RATE. Redirects are followed within the
        server's origin for GET (at most MAX_REDIRECTS), refused anywhere else."""
        url = self.base + path
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(method, url, path, data, json_body, params, sending)
            if response.status not in REDIRECTS:
                break
            response.release()
            url, params = self._redirected(method, path, url, response), None
        else:
            raise ServerAnswerError(f"{self.name} redirected {method} {path} more than {MAX_REDIRECTS} times")
        if response.status >= 400:
            text = await self._text(response)
            body, shown = self.secrets.mask_all(text), self.secrets.mask(text)
            if response.status >= 500:
                raise ServerLostError(
                    f"{self.name} failed {method} {path} with HTTP {response.status} {shown}"
                )
            advice = ACCESS_ADVICE if response.status in (401, 403) else ""
            raise ServerRefusedError(
                f"{self.name} refused {method} {path} with HTTP {response.status} {shown}{advice}",
                response.status,
                body,
            )
        if not read:
            return response
        return await self._answer(response, method, path)

    async def _send(self, method, url, path, data, json_body, params, sending):
        """The response's status and headers (its body unread), within the timeout (plus the upload's)."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
        try:
            return await asyncio.wait_for(
                self.session.request(
                    method,
                    url,
                    data=data,
                    json=json_body,
                    params=params,
                    headers=self.headers,
                    allow_redirects=False,
                    timeout=timeout,
                ),
                self.timeout + sending / MIN_RATE,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as error:
            raise ServerLostError(f"{self.name} did not answer {method} {path} ({describe(error)})") from None

    def _redirected(self, method: str, path: str, url: str, response) -> str:
        """Where a redirect points, when the client may follow it: the same scheme, host and port, and a
        GET; else ServerRefusedError saying where it pointed and what to give instead."""
        location = response.headers.get("Location", "")
        target = urljoin(url, location)
        if not location or url_problem(target):
            raise ServerAnswerError(f"{self.name} redirected {method} {path} nowhere usable")
        if origin(target) != origin(url):
            raise ServerRefusedError(
                f"{self.name} redirected {method} {path} to {display_url(target)}, another server; it is not "
                "followed there (your access headers would go with it): if that is where ComfyUI runs, give "
                f"--server {origin(target)}",
                response.status,
            )
        if method not in ("GET", "HEAD"):
            raise ServerRefusedError(
                f"{self.name} redirected {method} {path} to {display_url(target)}; give --server as the URL "
                "ComfyUI answers at without redirects",
                response.status,
            )
        return target

    async def _answer(self, response, method: str, path: str):
        import aiohttp

        where = Origin(self.name, f"{method} {path}")
        if (response.content_length or 0) > MAX_ANSWER:
            response.release()
            raise where.error(f"an answer of {response.content_length} bytes, more than any of ComfyUI's")
        try:
            raw = await asyncio.wait_for(self._capped(response, where), self.timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise ServerLostError(
                f"{self.name} broke off its answer to {method} {path} ({describe(error)})"
            ) from None
        finally:
            response.release()
        text = raw.decode("utf-8", errors="replace")
        if response.content_type != "application/json":
            return self.secrets.mask_all(text)
        try:
            return self.secrets.mask_all(json.loads(text))
        except ValueError:
            raise where.error("JSON that does not parse (cut short, or not JSON at all)") from None
        except RecursionError:
            raise where.error("JSON nested deeper than any of ComfyUI's") from None

    @staticmethod
    async def _capped(response, where: Origin) -> bytes:
        """The answer's body, at most MAX_ANSWER bytes (an answer without a length is read in chunks)."""
        body = bytearray()
        while chunk := await response.content.readany():
            body += chunk
            if len(body) > MAX_ANSWER:
                raise where.error(f"an answer of more than {MAX_ANSWER} bytes, more than any of ComfyUI's")
        return bytes(body)

    async def _text(self, response) -> str:
        try:
            return (await asyncio.wait_for(response.text(errors="replace"), self.timeout)).strip()
        except Exception:  # the body is only for the message
            return ""
        finally:
            response.release()

    async def get_object(self, path: str) -> dict:
        """`GET path`, whose answer must be a JSON object."""
        return obj(await self.request("GET", path), Origin(self.name, f"GET {path}"))

    async def system_stats(self) -> dict:
        return await self.get_object("/system_stats")

    async def object_info(self) -> dict:
        return await self.get_object("/object_info")

    async def pack_info(self) -> dict | None:
        """The pack's `GET /diffferv/info` (its version, whether the face models are there), or None when
        the server has no such route (the pack is not installed there)."""
        try:
            return await self.get_object("/diffferv/info")
        except ServerRefusedError as error:
            if error.status == 404:
                return None
            raise

    async def upload(self, path: Path, name: str) -> str:
        """Upload a file into the server's input folder as `name`; returns the name it got (the server
        adds " (1)" when a different file already has the name, and keeps the existing one when it is
        the same). A 413 (over the server's --max-upload-size) is a ServerRefusedError."""
        import aiohttp

        where = Origin(self.name, "POST /upload/image")
        with path.open("rb") as handle:
            form = aiohttp.FormData()
            form.add_field("image", handle, filename=name, content_type="application/octet-stream")
            form.add_field("type", "input")
            answer = await self.request("POST", "/upload/image", data=form, sending=path.stat().st_size)
        given = field(obj(answer, where), "name", str, where)
        if not PLAIN_NAME.match(given) or given in (".", ".."):
            raise where.error(f"the name {given[:80]!r}, which is not a plain file name")
        return given

    async def queue(self, prompt: dict, client_id: str, prompt_id: str) -> dict:
        """Queue an API-form workflow under `prompt_id` for `client_id`'s socket; returns the node errors
        of the outputs the server left out (empty when it queued all). A workflow the validator rejects
        whole is a ServerRefusedError (400) whose body holds `error` and `node_errors`."""
        where = Origin(self.name, "POST /prompt")
        body = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        answer = obj(await self.request("POST", "/prompt", json_body=body), where)
        return field(answer, "node_errors", dict, where, {})

    async def history(self, prompt_id: str) -> dict | None:
        """The prompt's history entry once it has ended (None while it is queued or running), checked:
        its status (`status_str`, `messages`) and `outputs` as the client reads them."""
        where = Origin(self.name, f"GET /history/{prompt_id}")
        entry = obj(await self.request("GET", f"/history/{prompt_id}"), where).get(prompt_id)
        if entry is None:
            return None
        entry = obj(entry, where)
        status = field(entry, "status", dict, where, {})
        if status.get("completed") is None:
            return None
        field(status, "status_str", str, where, "")
        items(field(status, "messages", list, where, []), list, where, "the status messages")
        for node, output in field(entry, "outputs", dict, where, {}).items():
            obj(output, Origin(self.name, f"GET /history/{prompt_id} (node {node[:40]})"))
        return entry

    async def waiting(self) -> set[str]:
        """The ids of the prompts the server runs or keeps queued (`GET /queue`)."""
        where = Origin(self.name, "GET /queue")
        answer = obj(await self.request("GET", "/queue"), where)
        ids = set()
        for key in ("queue_running", "queue_pending"):
            for item in items(field(answer, key, list, where, []), list, where, key):
                if len(item) > 1 and isinstance(item[1], str):
                    ids.add(item[1])
        return ids

    async def download(self, saved: dict, target: Path, limit: int) -> None:
        """Stream an output file (a node's ui entry {"filename", "subfolder", "type"}) from /view into
        `target`, refusing what cannot be that file: a text or JSON answer, more than `limit` bytes, an
        empty file; a server that sends slower than MIN_RATE (after the first `timeout` seconds) or stops
        for `timeout` seconds is lost. Nothing is left at `target` when it fails."""
        import aiohttp

        params = {key: saved[key] for key in ("filename", "subfolder", "type")}
        where = Origin(self.name, f"GET /view ({saved['filename']})")
        response = await self.request("GET", "/view", params=params, read=False)
        started, received = time.monotonic(), 0
        try:
            kind = response.content_type
            if kind.startswith("text/") or kind == "application/json":
                raise where.error(f"a {kind} answer where a video file belongs")
            if response.content_length is not None and response.content_length > limit:
                raise where.error(
                    f"a file of {response.content_length} bytes, more than an edit of this size makes"
                )
            with target.open("wb") as handle:
                while chunk := await asyncio.wait_for(response.content.readany(), self.timeout):
                    received += len(chunk)
                    if received > limit:
                        raise where.error(f"more than the {limit} bytes an edit of this size makes")
                    if time.monotonic() - started > self.timeout + received / MIN_RATE:
                        raise ServerLostError(
                            f"{self.name} sends {saved['filename']} slower than {MIN_RATE // 1024} KiB/s "
                            f"({received} bytes in {time.monotonic() - started:.0f} s)"
                        )
                    handle.write(chunk)
            if response.content_length is not None and received < response.content_length:
                raise ServerLostError(f"{self.name} broke off sending {saved['filename']}")
            if received == 0:
                raise where.error("an empty file")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            target.unlink(missing_ok=True)
            raise ServerLostError(
                f"{self.name} broke off sending {saved['filename']} ({describe(error)})"
            ) from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        finally:
            response.release()

    async def cancel(self, prompt_id: str) -> None:
        """Cancel one prompt and nobody else's: take it off the queue if it waits, interrupt it if it runs
        (ComfyUI interrupts only when the running prompt is this one)."""
        await self.request("POST", "/queue", json_body={"delete": [prompt_id]})
        await self.request("POST", "/interrupt", json_body={"prompt_id": prompt_id})

    async def socket(self, client_id: str):
        """The server's event WebSocket for `client_id` (ws:// or wss:// as the URL is http or https), with
        a heartbeat, opened within the timeout; raises ServerLostError when it cannot be opened."""
        import aiohttp

        url = "ws" + self.base[len("http") :] + f"/ws?clientId={client_id}"
        try:
            closing = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=min(self.timeout, HEARTBEAT))
            return await asyncio.wait_for(
                self.session.ws_connect(url, heartbeat=HEARTBEAT, headers=self.headers, timeout=closing),
                self.timeout,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise ServerLostError(f"{self.name} did not open its event socket ({describe(error)})") from None


async def next_event(api: ServerApi, socket) -> dict | None:
    """The next JSON event from a server socket ({"type": str, "data": {...}}, its strings masked),
    skipping binary messages (previews); None when the socket has closed or broken. An event of another
    shape is a ServerAnswerError."""
    import aiohttp

    where = Origin(api.name, "its event socket")
    while True:
        try:
            message = await socket.receive()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None
        if message.type == aiohttp.WSMsgType.TEXT:
            try:
                event = obj(api.secrets.mask_all(json.loads(message.data)), where)
            except (ValueError, RecursionError):
                raise where.error("a message that is not JSON ComfyUI sends") from None
            field(event, "type", str, where)
            field(event, "data", dict, where, {})
            return event
        if message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
            continue
        return None


def origin(url: str) -> str:
    """scheme://host:port of a URL (the default port said), the unit redirects may not leave."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def describe(error: BaseException) -> str:
    """A network error in a few words, without Python's names for it."""
    import aiohttp

    if isinstance(error, asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "it closed the connection"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect: {error.os_error.strerror or 'refused'}"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "its answer broke off"
    if isinstance(error, aiohttp.WSServerHandshakeError):
        return f"the handshake was answered with HTTP {error.status}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return "a network error"
