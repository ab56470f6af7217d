"""Parts of one edit (a long edit's segments, a preview's stretches) spread over workers: this process's
ComfyUI or servers, each running one part at a time and taking the next when free (`spread`); a server
lost during a part puts the part back at the front of the queue for another and leaves. Each part is an
edit of its own (`run_part`: its progress under the run's one line, the clip put on its worker once)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..comfyhost.executor import Executor
from ..remote.errors import ServerLostError
from ..segments.plan import Segment
from .edit_job import EditJob
from .edit_run import produce
from .gpu_fit import Gpu
from .plan import stages
from .progress import OverallProgress, PartsProgress, format_duration


@dataclass
class Worker:
    """Where parts run: an executor, its name in the progress line, and what a part's plan is fitted to
    there (its free RAM, its GPU). `clip`: the clip's name there once it is put (uploaded once)."""

    name: str
    executor: Executor
    free_ram: int
    gpu: Gpu | None
    clip: str | None = None


PartRun = Callable[[Segment, Worker], Awaitable[None]]
"""Runs one part on a worker; raises ServerLostError when the worker's server is lost."""


async def spread(todo: deque[Segment], workers: list[Worker], run: PartRun) -> list[tuple[str, str]]:
    """Run the parts in `todo` (taken from the front) on `workers` until none waits or every worker is
    lost; returns the lost workers' names and why (the parts they held are back in `todo`). With one
    worker the parts run one after another without an event loop (the in-process executor's awaits never
    suspend: comfyhost.runner.completed)."""
    lost: list[tuple[str, str]] = []

    async def work(worker: Worker) -> None:
        while todo:
            part = todo.popleft()
            try:
                await run(part, worker)
            except ServerLostError as error:
                todo.appendleft(part)
                lost.append((worker.name, str(error)))
                return

    alive = list(workers)
    while todo and alive:
        if len(alive) == 1:
            await work(alive[0])
        else:
            await asyncio.gather(*(work(worker) for worker in alive))
        alive = [worker for worker in alive if worker.name not in {name for name, _ in lost}]
    return lost


async def run_part(
    job: EditJob,
    worker: Worker,
    progress: PartsProgress,
    name: str,
    folder: Path,
    video: Path,
    keep: Callable[[dict, dict[str, Path], float], None],
) -> None:
    """Run one part's `job` on `worker` (the clip `video` put there first if it is not yet), its progress
    shown as `name` under `progress`, its videos fetched into `folder`, then `keep` them (the workflow's
    outputs, its videos: filename prefix -> file, the seconds it took) before the part is said done. A lost
    server is said on the progress line and raised."""
    started = time.monotonic()
    one = OverallProgress(
        stages(job.plan, job.clip_frames), job.graph.class_types(), show=False, on_change=progress.moved
    )
    progress.started(name, worker.name, one)
    try:
        if worker.clip is None:
            worker.clip = await worker.executor.put_clip(video)
        outputs, produced = await produce(job, worker.executor, one, folder, worker.clip)
    except ServerLostError as lost:
        progress.ended(
            name, f"server {worker.name} was lost during {name} ({lost}); it goes back to the queue", None
        )
        raise
    seconds = time.monotonic() - started
    keep(outputs, produced, seconds)
    progress.ended(name, f"{name} done on {worker.name} in {format_duration(seconds)}", True)
