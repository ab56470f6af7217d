"""A ComfyUI server driven over its HTTP and WebSocket API, the one its browser client, comfy-cli and the
multi-machine tools use: `POST /upload/image`, `POST /prompt`, `/ws?clientId=` events, `GET /history/{id}`,
`GET /view`, `POST /interrupt` and `POST /queue` (cancel one prompt), `GET /object_info`,
`GET /system_stats`, and the pack's own `GET /diffferv/info` (nodes/server_info.py).

`ServerApi` is one server: an http(s) URL and the extra request headers a server behind an authenticating
proxy wants (a token; they are sent, never printed: the server is always named by `display_url`, without
credentials). What goes wrong is one of two errors: `ServerLostError` when the server does not answer
(refused or dropped connection, a timeout, a proxy's 502/503/504, any 5xx), which the batch dispatcher
takes as "run the job elsewhere", and `ServerRefusedError` when it answers no (a 4xx), which it does not
retry. aiohttp is ComfyUI's own HTTP library (in every ComfyUI environment); it is imported when a
`ServerApi` opens.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

REQUEST_TIMEOUT = 30.0
"""Seconds one request (not a job: a job may take hours) may take before the server counts as lost."""
HEARTBEAT = 10.0
"""Seconds between WebSocket pings; a server that does not answer one is taken as gone."""

ACCESS_ADVICE = (
    " (give the server's token with --token-env VAR, or its proxy's headers with --headers-file FILE)"
)


class ServerError(Exception):
    """Something about one server; the message names it by its display URL."""


class ServerLostError(ServerError):
    """The server did not answer (down, unreachable, timed out, or failing with a 5xx)."""


class ServerRefusedError(ServerError):
    """The server answered a request with a refusal (4xx); `status` is the HTTP status."""

    def __init__(self, message: str, status: int, body: str = ""):
        super().__init__(message)
        self.status, self.body = status, body


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
    request and the WebSocket's handshake."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = REQUEST_TIMEOUT):
        parts = urlsplit(url)
        self.name = display_url(url)
        self.base = self.name  # credentials in the URL travel as a header, not in the address
        self.headers = dict(headers or {})
        if parts.username is not None and "Authorization" not in self.headers:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self.timeout = timeout
        self.session = None

    def __repr__(self) -> str:  # never shows the headers
        return f"ServerApi({self.name})"

    async def __aenter__(self) -> ServerApi:
        import aiohttp

        self.session = aiohttp.ClientSession(headers=self.headers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def request(
        self, method: str, path: str, *, data=None, json_body=None, params=None, read=True, bounded=True
    ):
        """One request; returns the answer's body (JSON decoded when it is JSON), raising ServerLostError
        or ServerRefusedError. `read` False returns the open response (for a download; the caller
        releases it). `bounded`: the whole request must end within the timeout; otherwise (an upload, a
        download: they take as long as the file needs) only connecting and each wait for data are."""
        import aiohttp

        whole = self.timeout if bounded and read else None
        try:
            response = await self.session.request(
                method,
                self.base + path,
                data=data,
                json=json_body,
                params=params,
                timeout=aiohttp.ClientTimeout(total=whole, sock_connect=self.timeout, sock_read=self.timeout),
            )
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as error:
            raise ServerLostError(f"{self.name} did not answer {method} {path} ({describe(error)})") from None
        if response.status >= 500:
            body = await self._text(response)
            raise ServerLostError(
                f"{self.name} failed {method} {path} with HTTP {response.status} {body[:200]}"
            )
        if response.status >= 400:
            body = await self._text(response)
            advice = ACCESS_ADVICE if response.status in (401, 403) else ""
            raise ServerRefusedError(
                f"{self.name} refused {method} {path} with HTTP {response.status} {body[:300]}{advice}",
                response.status,
                body,
            )
        if not read:
            return response
        try:
            if response.content_type == "application/json":
                return await response.json()
            return await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            raise ServerLostError(f"{self.name} broke off its answer to {path} ({describe(error)})") from None

    async def _text(self, response) -> str:
        try:
            return (await response.text()).strip()
        except Exception:  # the body is only for the message
            return ""

    async def system_stats(self) -> dict:
        return await self.request("GET", "/system_stats")

    async def object_info(self) -> dict:
        return await self.request("GET", "/object_info")

    async def pack_info(self) -> dict | None:
        """The pack's `GET /diffferv/info` (its version, whether the face models are there), or None when
        the server has no such route (the pack is not installed there)."""
        try:
            return await self.request("GET", "/diffferv/info")
        except ServerRefusedError as error:
            if error.status == 404:
                return None
            raise

    async def upload(self, path: Path, name: str) -> str:
        """Upload a file into the server's input folder as `name`; returns the name it got (the server
        adds " (1)" when a different file already has the name, and keeps the existing one when it is
        the same). A 413 (over the server's --max-upload-size) is a ServerRefusedError."""
        import aiohttp

        with path.open("rb") as handle:
            form = aiohttp.FormData()
            form.add_field("image", handle, filename=name, content_type="application/octet-stream")
            form.add_field("type", "input")
            answer = await self.request("POST", "/upload/image", data=form, bounded=False)
        return answer["name"]

    async def queue(self, prompt: dict, client_id: str, prompt_id: str) -> dict:
        """Queue an API-form workflow under `prompt_id` for `client_id`'s socket; returns the node errors
        of the outputs the server left out (empty when it queued all). A workflow the validator rejects
        whole is a ServerRefusedError (400) whose body holds `error` and `node_errors`."""
        body = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        answer = await self.request("POST", "/prompt", json_body=body)
        return answer.get("node_errors") or {}

    async def history(self, prompt_id: str) -> dict | None:
        """The prompt's history entry once it has ended (None while it is queued or running)."""
        entry = (await self.request("GET", f"/history/{prompt_id}")).get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        return None

    async def download(self, saved: dict, target: Path) -> None:
        """Stream an output file (a node's ui entry {"filename", "subfolder", "type"}) from /view into
        `target`."""
        import aiohttp

        params = {key: saved[key] for key in ("filename", "subfolder", "type")}
        response = await self.request("GET", "/view", params=params, read=False)
        try:
            with target.open("wb") as handle:
                async for chunk in response.content.iter_chunked(1 << 20):
                    handle.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise ServerLostError(
                f"{self.name} broke off sending {saved['filename']} ({describe(error)})"
            ) from None
        finally:
            response.release()

    async def cancel(self, prompt_id: str) -> None:
        """Cancel one prompt and nobody else's: take it off the queue if it waits, interrupt it if it runs
        (ComfyUI interrupts only when the running prompt is this one)."""
        await self.request("POST", "/queue", json_body={"delete": [prompt_id]})
        await self.request("POST", "/interrupt", json_body={"prompt_id": prompt_id})

    async def socket(self, client_id: str):
        """The server's event WebSocket for `client_id` (ws:// or wss:// as the URL is http or https), with
        a heartbeat; raises ServerLostError when it cannot be opened."""
        import aiohttp

        url = "ws" + self.base[len("http") :] + f"/ws?clientId={client_id}"
        try:
            return await self.session.ws_connect(url, heartbeat=HEARTBEAT)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise ServerLostError(f"{self.name} did not open its event socket ({describe(error)})") from None


async def next_event(socket) -> dict | None:
    """The next JSON event from a server socket ({"type", "data"}), skipping binary messages (previews);
    None when the socket has closed or broken."""
    import aiohttp

    while True:
        try:
            message = await socket.receive()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None
        if message.type == aiohttp.WSMsgType.TEXT:
            try:
                return json.loads(message.data)
            except ValueError:
                continue
        if message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
            continue
        return None


def describe(error: BaseException) -> str:
    """A network error in a few words (its class when it says nothing)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
