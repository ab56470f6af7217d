"""The flags that reach a ComfyUI server (--server, --token-env, --headers-file) turned into the request
headers, each refused in flag terms before anything is sent; never says a header's value."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..remote.server_api import read_headers, url_problem
from .cli import InputRefusedError


def server_headers(args: argparse.Namespace) -> dict[str, str]:
    """The extra request headers for the server(s): `Authorization: Bearer` with the token in the
    environment variable --token-env names, and those of --headers-file. Refuses an unset variable, an
    unreadable or malformed file, and --server flags with no meaning there; never says a value."""
    if not 0 < args.lost_after <= 3600:
        raise InputRefusedError(
            f"--lost-after is {args.lost_after:g}; use a number of seconds above 0 and at most 3600 (e.g. 30)"
        )
    servers = args.server if isinstance(args.server, list) else [args.server]
    for url in servers:
        problem = url_problem(url)
        if problem:
            raise InputRefusedError(f"--server: {problem}")
    if getattr(args, "cpu", False):
        raise InputRefusedError(
            "--cpu: a server runs on its own device; start that server with --cpu instead"
        )
    headers = {}
    if args.headers_file:
        path = Path(args.headers_file).expanduser()
        try:
            headers.update(read_headers(path))
        except OSError as error:
            raise InputRefusedError(f"--headers-file: {path} cannot be read ({error.strerror})") from None
        except ValueError as error:
            raise InputRefusedError(f"--headers-file: {path}: {error}") from None
    if args.token_env:
        token = os.environ.get(args.token_env, "").strip()
        if not token:
            raise InputRefusedError(
                f"--token-env: the environment variable {args.token_env} is not set (or empty); export it "
                "with the server's token"
            )
        headers["Authorization"] = f"Bearer {token}"
    return headers
