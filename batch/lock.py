"""One batch per output folder: `FolderLock` holds `.batch.lock` there (this process's id and host)
while a batch runs, and refuses a second batch on the same folder in one sentence. A lock left by a
process that has died on this host is stale and taken over."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..headless.cli import InputRefusedError

LOCK_FILE = ".batch.lock"


def alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class FolderLock:
    """`with FolderLock(folder):` runs a batch into `folder` alone."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE
        self.mine = f"{os.getpid()} {socket.gethostname()}"

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    raise self._refusal() from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(handle, "w") as file:
                file.write(self.mine + "\n")
            return self
        raise self._refusal()

    def __exit__(self, *exc) -> None:
        try:
            if self.path.read_text().strip() == self.mine:
                self.path.unlink()
        except OSError:  # removed with its folder
            pass

    def _holder(self) -> tuple[int, str] | None:
        try:
            pid, host = self.path.read_text().split()
            return int(pid), host
        except (OSError, ValueError):
            return None

    def _stale(self) -> bool:
        holder = self._holder()
        if holder is None:  # being written this instant, or left broken long ago
            try:
                return time.time() - self.path.stat().st_mtime > 10
            except OSError:
                return True
        return holder[1] == socket.gethostname() and not alive(holder[0])

    def _refusal(self) -> InputRefusedError:
        holder = self._holder()
        who = f"process {holder[0]} on {holder[1]}" if holder else "another process"
        return InputRefusedError(
            f"--output-dir: another batch ({who}) is running into {self.path.parent}; wait for it to end or "
            f"give another --output-dir (if no batch runs there, delete {self.path})"
        )
