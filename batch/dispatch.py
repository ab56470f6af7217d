"""The jobs spread over the servers: each server runs one job at a time and takes the next waiting job
when it is free. A server lost during a job (it stopped answering, died, restarted: `ServerLostError`)
puts the job back at the front of the queue for another server and leaves the batch; a job the server
refuses or fails (validation in the flag's terms, a node's error, an upload too large) is recorded
failed once and not retried. Each finished job's files are fetched into a hidden folder inside the
output folder and moved into place together (`headless.outputs.write_outputs`); the status file
records every job's end (`status.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..headless import edit_run
from ..headless.cli import InputRefusedError
from ..headless.edit_job import prepare_job
from ..headless.failures import WorkflowFailedError
from ..headless.long_edit import LongEdit, plan_long_edit
from ..headless.plan import stages
from ..headless.progress import OverallProgress, PartsProgress, format_duration
from ..headless.server_check import ServerFacts, upload_clip
from ..headless.workers import Worker
from ..remote.errors import ServerLostError, ServerRefusedError
from ..remote.runner import LOST_AFTER, RemoteExecutor
from ..remote.server_api import ServerApi
from .jobs import Job
from .status import DONE, FAILED, StatusFile


@dataclass
class Server:
    """A server the batch runs jobs on, and what it said of itself when checked."""

    api: ServerApi
    facts: ServerFacts

    @property
    def name(self) -> str:
        return self.api.name


class JobFailedError(Exception):
    """The job cannot run (on any server): the message says why, in the edit's flag terms."""


@dataclass
class Dispatcher:
    """Runs `jobs` on `servers`; see the module docstring. After `run`, `pending` holds the jobs no
    server could take (every server was lost), `failed` the failed jobs and their sentences, `lost` the
    lost servers and why."""

    jobs: list[Job]
    servers: list[Server]
    status: StatusFile
    progress: PartsProgress
    folder: Path
    lost_after: float = LOST_AFTER
    pending: deque = field(init=False)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    lost: list[tuple[str, str]] = field(default_factory=list)
    running: int = 0
    retried: set[int] = field(default_factory=set)

    def __post_init__(self):
        self.pending = deque(self.jobs)
        self.changed = asyncio.Condition()

    async def run(self) -> None:
        await asyncio.gather(*(self.worker(server) for server in self.servers))

    async def take(self) -> Job | None:
        """The next job, waiting while none waits but some run (a lost server's job may come back);
        None when all have ended."""
        async with self.changed:
            while not self.pending:
                if self.running == 0:
                    return None
                await self.changed.wait()
            self.running += 1
            return self.pending.popleft()

    async def give_back(self, job: Job, requeue: bool) -> None:
        async with self.changed:
            self.running -= 1
            if requeue:
                self.pending.appendleft(job)
            self.changed.notify_all()

    async def worker(self, server: Server) -> None:
        while (job := await self.take()) is not None:
            try:
                await self.run_job(server, job)
            except OSError as trouble:  # a file here (the output folder removed, a disk full): not the server
                again = job.number not in self.retried
                self.retried.add(job.number)
                await self.give_back(job, requeue=again)
                where = f": {trouble.filename}" if trouble.filename else ""
                said = f"a file here could not be read or written ({trouble.strerror or 'an error'}{where})"
                if not again:
                    self.failed.append((job, said))
                    with contextlib.suppress(OSError):
                        self.status.record(job, FAILED, server.name, 0.0, said)
                self.progress.ended(
                    job.name,
                    f"{job.name}: {said}; " + ("it goes back to the queue" if again else "recorded failed"),
                    None if again else False,
                )
                continue
            except ServerLostError as lost:
                await self.give_back(job, requeue=True)
                self.lost.append((server.name, str(lost)))
                self.progress.ended(
                    job.name,
                    f"server {server.name} was lost during {job.name} ({lost}); the job goes back to the "
                    "queue and the server is left out",
                    None,
                )
                return
            except BaseException:
                await self.give_back(job, requeue=False)
                raise
            await self.give_back(job, requeue=False)

    async def run_whole(self, server: Server, job: Job) -> None:
        """Run a job that one segment holds on `server`; its outputs moved into place together."""
        edit = prepare_job(job.args, job.checked, server.facts.ram_free, server.facts.gpu)
        progress = OverallProgress(
            stages(edit.plan, edit.clip_frames),
            edit.graph.class_types(),
            show=False,
            on_change=self.progress.moved,
        )
        self.progress.started(job.name, server.name, progress)
        upload = partial(upload_clip, server.api, flag="--video")
        executor = RemoteExecutor(
            server.api, self.lost_after, upload, edit.output_limit(), edit.output_problem
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            dir=self.folder, prefix=".batch_", ignore_cleanup_errors=True
        ) as scratch:
            try:
                await edit_run.run_job(edit, executor, progress, Path(scratch), show=False)
            except WorkflowFailedError as failed:
                raise JobFailedError("; ".join(failed.lines(verbose=False))) from None

    async def run_long(self, server: Server, job: Job, long: LongEdit) -> None:
        """Run a long job's segments on `server` (headless.long_edit): its segments are kept beside its
        output as they finish, so when the server is lost, the server that takes the job next goes on from
        there."""
        first = long.job(long.segments[0], server.facts.ram_free, server.facts.gpu)
        upload = partial(upload_clip, server.api, flag="--video")
        executor = RemoteExecutor(
            server.api, self.lost_after, upload, first.output_limit(), first.output_problem
        )
        worker = Worker(server.name, executor, server.facts.ram_free, server.facts.gpu)
        progress = PartsProgress(len(long.segments), "segments", show=False, on_change=self.progress.moved)
        self.progress.started(job.name, server.name, progress)
        try:
            await long.run([worker], progress)
        except WorkflowFailedError as failed:
            raise JobFailedError("; ".join(failed.lines(verbose=False))) from None

    async def run_job(self, server: Server, job: Job) -> None:
        """Run one job on `server`: upload, queue, follow, fetch, record. Raises ServerLostError when the
        server is lost; records any other failure of the job."""
        started = time.monotonic()
        try:
            long = plan_long_edit(job.args, job.checked, server.facts.ram_free)
            if long is not None:
                await self.run_long(server, job, long)
            else:
                await self.run_whole(server, job)
        except (JobFailedError, InputRefusedError, ServerRefusedError) as failure:
            seconds = time.monotonic() - started
            self.failed.append((job, str(failure)))
            self.status.record(job, FAILED, server.name, seconds, str(failure))
            self.progress.ended(job.name, f"{job.name} failed on {server.name}: {failure}", False)
            return
        seconds = time.monotonic() - started
        self.status.record(job, DONE, server.name, seconds)
        self.progress.ended(job.name, f"{job.name} done on {server.name} in {format_duration(seconds)}", True)
