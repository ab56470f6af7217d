"""One progress line for a batch: jobs done of all, which job runs where and how far it is, and an ETA
from the work done so far (finished jobs count 1, a running one its share done, from its own
`headless.progress.OverallProgress` fed by its server's events). Events (a job started, finished,
failed, a server lost) are printed as lines of their own. On a terminal the progress line is redrawn
in place; otherwise it is printed with each event and each time another tenth of the batch is done."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from ..headless.progress import OverallProgress, ProgressOutput, format_duration


class BatchProgress:
    """See the module docstring. `jobs`: how many jobs this run has to do."""

    def __init__(self, jobs: int, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.jobs = jobs
        self.output = ProgressOutput(stream)
        self.clock = clock
        self.start = clock()
        self.done = 0
        self.failed = 0
        self.running: dict[str, tuple[str, OverallProgress]] = {}  # job name -> (server, its progress)

    def share(self) -> float:
        """The share of the batch's work done, 0..1 (a failed job counts as done work)."""
        work = self.done + self.failed + sum(progress.done() for _, progress in self.running.values())
        return min(work / max(self.jobs, 1), 1.0)

    def line(self) -> str:
        elapsed = self.clock() - self.start
        share = self.share()
        running = ", ".join(
            f"{name} on {server} {100 * progress.done():.0f}%"
            for name, (server, progress) in self.running.items()
        )
        said = f"[{format_duration(elapsed):>12}] {self.done}/{self.jobs} jobs done"
        if self.failed:
            said += f", {self.failed} failed"
        if running:
            said += f"; running: {running}"
        if 0 < share < 1:
            said += f"; ETA {format_duration(elapsed * (1 - share) / share)}"
        return said

    def started(self, name: str, server: str, progress: OverallProgress) -> None:
        self.running[name] = (server, progress)
        self.event(f"{name} started on {server}")

    def ended(self, name: str, said: str, done: bool | None) -> None:
        """A job left its server: done (True), failed (False) or put back in the queue (None)."""
        self.running.pop(name, None)
        if done is True:
            self.done += 1
        elif done is False:
            self.failed += 1
        self.event(said)

    def moved(self) -> None:
        """A running job's progress moved."""
        self.output.update(self.line(), self.share(), always=False)

    def event(self, said: str) -> None:
        """Print an event on its own line, then the progress line."""
        self.output.say(said)
        self.output.update(self.line(), self.share(), always=True)

    def end_line(self) -> None:
        self.output.end_line()
