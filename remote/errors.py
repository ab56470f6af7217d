"""What goes wrong with a server, in three kinds the callers act on: `ServerLostError` (it does not answer,
or answers what no ComfyUI server answers: a batch runs the job elsewhere), `ServerRefusedError` (it
answers no: not retried) and their base `ServerError`. Every message names the server by its display URL
and holds no secret (remote/answers.py masks what the server echoes)."""

from __future__ import annotations


class ServerError(Exception):
    """Something about one server; the message names it by its display URL."""


class ServerLostError(ServerError):
    """The server did not answer (down, unreachable, timed out, or failing with a 5xx)."""


class ServerRefusedError(ServerError):
    """The server answered a request with a refusal (4xx); `status` is the HTTP status."""

    def __init__(self, message: str, status: int, body: str = ""):
        super().__init__(message)
        self.status, self.body = status, body
