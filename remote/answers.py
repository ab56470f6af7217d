"""What a server says, checked before the client uses it: every JSON answer, event and history entry is
held to the shape the client needs, and anything else ends in one `ServerAnswerError` naming the server,
the route and what was wrong, never in a Python exception.

The checks are small and read like the shape they expect: `obj(value, where)` for a JSON object,
`field(answer, key, kind, where)` for one member, `items(value, kind, where)` for a list. `where` is an
`Origin` (the server's display name and the route) that says itself in the sentence. Server text shown to
the user or stored (an error body, a node's exception message) goes through `Secrets.mask` first, which
cuts it short and masks every header value the client sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ServerLostError

SHOWN_CHARACTERS = 300
"""How much of a server's text a message shows at most."""
MASK = "***"


class ServerAnswerError(ServerLostError):
    """The server answered something that is not what a ComfyUI server answers (an HTML page, a list where
    an object belongs, a wrong type, a missing member): the client cannot go on with it, so it is taken
    like a lost server (a batch runs the job elsewhere)."""


@dataclass(frozen=True)
class Origin:
    """Where an answer came from: the server's display name and the route (``GET /system_stats``, ``the
    event socket``)."""

    server: str
    route: str

    def error(self, problem: str) -> ServerAnswerError:
        return ServerAnswerError(f"{self.server} answered {self.route} with {problem}")


def described(value: object) -> str:
    """What a value is, in a few words, for a message (never the value itself: it may hold anything)."""
    if isinstance(value, str):
        head = value.lstrip()[:200].lower()
        if head.startswith(("<!doctype html", "<html")) or "<body" in head or "<head" in head:
            return "an HTML page (a login or error page of a proxy in front of it?)"
        return "text" if value.strip() else "an empty answer"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a JSON list"
    if isinstance(value, dict):
        return "a JSON object"
    return "nothing" if value is None else "something else"


KINDS = {
    dict: "a JSON object",
    list: "a JSON list",
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
}


def obj(value: object, where: Origin) -> dict:
    """`value` when it is a JSON object, else ServerAnswerError (what it was instead)."""
    if not isinstance(value, dict):
        raise where.error(f"{described(value)} where ComfyUI answers a JSON object")
    return value


def _is(value: object, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    return isinstance(value, kind)


def field(answer: dict, key: str, kind: type, where: Origin, default: object = ...) -> object:
    """`answer[key]`, which must be of `kind` (int: a whole number, float: a finite number; a missing key
    gives `default` when one is given). Raises ServerAnswerError naming the member otherwise."""
    if key not in answer or answer[key] is None:
        if default is not ...:
            return default
        raise where.error(f"an answer without {key!r}")
    value = answer[key]
    if not _is(value, kind):
        raise where.error(f"{key!r} as {described(value)} where {KINDS[kind]} belongs")
    return float(value) if kind is float else value


def items(value: object, kind: type, where: Origin, what: str) -> list:
    """`value` as a list whose every item is of `kind`; `what` names the list in the message."""
    if not isinstance(value, list):
        raise where.error(f"{what} as {described(value)} where a JSON list belongs")
    for item in value:
        if not _is(item, kind):
            raise where.error(f"an item of {what} that is {described(item)}, not {KINDS[kind]}")
    return value


class Secrets:
    """The values the client sends that must never be shown or stored (its header values, the token and
    password inside them); `mask` hides them in any text and cuts the text short."""

    def __init__(self, values: Iterable[str]):
        found = set()
        for value in values:
            value = value.strip()
            found.add(value)
            scheme, _, rest = value.partition(" ")
            if rest and scheme.lower() in ("bearer", "basic", "token"):
                found.add(rest.strip())
        self.values = sorted((v for v in found if len(v) >= 4), key=len, reverse=True)

    def mask(self, text: str, limit: int = SHOWN_CHARACTERS) -> str:
        """`text` with every secret replaced by ***, then cut to `limit` characters."""
        text = " ".join(self.mask_all(text).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def mask_all(self, value: object) -> object:
        """A JSON value with every string in it masked (not cut): an answer used as data."""
        if not self.values:
            return value
        if isinstance(value, str):
            for secret in self.values:
                value = value.replace(secret, MASK)
            return value
        if isinstance(value, list):
            return [self.mask_all(item) for item in value]
        if isinstance(value, dict):
            return {self.mask_all(k): self.mask_all(v) for k, v in value.items()}
        return value
