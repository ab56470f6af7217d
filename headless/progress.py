"""One progress line for a whole workflow run: the stages (load, optical flow, encode, inversion,
sampling, decode, write) weighted by their estimated work, with an ETA.

The `edit` command feeds it ComfyUI's events: `node_started(node id)` when the executor starts a node,
`node_progress(value, total, node id)` when a node's progress bar moves. A stage is a set of node
types; its weight is its estimated work in UNet frame-evaluations (the inversion and sampling are
counted exactly from the run's plan; loading, flow, encoding, decoding and writing by a per-frame
estimate). The overall share done is the finished stages' weight plus the running stage's share of its
own, and the ETA is the time so far scaled to the work left.

On a terminal the line is redrawn in place; otherwise (a log, a pipe) a line is printed when a stage
starts and each time another tenth of the whole work is done, never one per frame.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Stage:
    """A named part of the run: the node types that make it up and its estimated work."""

    name: str
    node_types: frozenset[str]
    work: float


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


class ProgressOutput:
    """Where a progress line goes: on a terminal, one line redrawn in place; elsewhere (a log, a pipe),
    printed lines, one when asked (`always`) or when another tenth of the work is done. `show` False:
    nothing at all."""

    def __init__(self, stream: TextIO | None = None, show: bool = True):
        self.stream = stream if stream is not None else sys.stdout
        self.show = show
        self.live = show and self.stream.isatty()
        self.tenths_shown = 0
        self.line_open = False

    def update(self, text: str, share: float, always: bool) -> None:
        """Show the progress line `text` with `share` (0..1) of the work done."""
        if not self.show:
            return
        if self.live:
            print("\r\033[K" + text, end="", file=self.stream, flush=True)
            self.line_open = True
            return
        tenths = int(share * 10 + 1e-9)
        if always or tenths > self.tenths_shown:
            self.tenths_shown = max(self.tenths_shown, tenths)
            print(text, file=self.stream, flush=True)

    def say(self, text: str) -> None:
        """Print a line of its own (the redrawn line ended first)."""
        if not self.show:
            return
        self.end_line()
        print(text, file=self.stream, flush=True)

    def end_line(self) -> None:
        """End the line being redrawn on a terminal (before other output, e.g. an error); no-op otherwise."""
        if self.live and self.line_open:
            print(file=self.stream, flush=True)
            self.line_open = False


class OverallProgress:
    """See the module docstring. `node_types` maps the workflow's node ids to their class types; nodes of
    no stage (previews) move nothing, and stages without a node in the workflow are left out. `show`
    False: nothing is printed (the share done and the ETA are still kept, e.g. for one job of a batch);
    `on_change` is called whenever the share done may have moved (a batch's line follows its jobs)."""

    def __init__(
        self,
        stages: Sequence[Stage],
        node_types: dict[str, str],
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        show: bool = True,
        on_change: Callable[[], None] | None = None,
    ):
        kinds = set(node_types.values())
        self.on_change = on_change
        self.stages = [stage for stage in stages if stage.node_types & kinds]
        self.total = sum(stage.work for stage in self.stages) or 1.0
        self.stage_of = {
            node_id: index
            for node_id, kind in node_types.items()
            for index, stage in enumerate(self.stages)
            if kind in stage.node_types
        }
        self.output = ProgressOutput(stream, show)
        self.clock = clock
        self.start = clock()
        self.finished: set[int] = set()
        self.current: int | None = None
        self.share = 0.0  # of the current stage
        self.detail = ""

    def done(self) -> float:
        """The share of the whole work done, 0..1."""
        work = sum(self.stages[i].work for i in self.finished)
        if self.current is not None and self.current not in self.finished:
            work += self.stages[self.current].work * self.share
        return min(work / self.total, 1.0)

    def eta(self) -> float | None:
        """Seconds left, from the time so far and the share done (None before any work is done)."""
        done = self.done()
        if done <= 0.0:
            return None
        return (self.clock() - self.start) * (1.0 - done) / done

    def node_started(self, node_id: str | None) -> None:
        index = self.stage_of.get(str(node_id))
        if index is None or index == self.current:
            return
        if self.current is not None:
            self.finished.add(self.current)
        self.current, self.share, self.detail = index, 0.0, ""
        self._show(stage_start=True)

    def node_progress(self, value: int, total: int, node_id: str | None) -> None:
        index = self.stage_of.get(str(node_id))
        if index is None or not total:
            return
        if index != self.current:
            self.node_started(node_id)
        self.share = min(value / total, 1.0)
        self.detail = f" {value}/{total}"
        self._show(stage_start=False)

    def finish(self) -> None:
        """The run is done: the 100 % line (and the end of the terminal line), whatever events came (a
        stage whose nodes ComfyUI took from its cache, or whose events were lost, reports nothing)."""
        self.finished.update(range(len(self.stages)))
        self.current = None
        self.detail = ""
        self._show(stage_start=True, name="done")
        self.end_line()

    def end_line(self) -> None:
        """End the line being redrawn on a terminal (before other output, e.g. an error); no-op otherwise."""
        self.output.end_line()

    def line(self, name: str | None = None) -> str:
        elapsed = self.clock() - self.start
        if name is None:
            name = self.stages[self.current].name if self.current is not None else ""
        eta = self.eta()
        remaining = "" if eta is None or name == "done" else f", ETA {format_duration(eta)}"
        return f"[{format_duration(elapsed):>12}] {100 * self.done():3.0f}% {name}{self.detail}{remaining}"

    def _show(self, stage_start: bool, name: str | None = None) -> None:
        self.output.update(self.line(name), self.done(), always=stage_start)
        if self.on_change is not None:
            self.on_change()


class PartsProgress:
    """One progress line for a run made of parts (the jobs of a batch, the segments of a long edit), each
    its own workflow run: parts done of all, which part runs where and how far it is, and an ETA from the
    work done so far (a finished part counts 1, a running one its share done, from its own
    `OverallProgress` fed by its executor's events). Events (a part started, finished, failed, a server
    lost) are printed as lines of their own. On a terminal the progress line is redrawn in place;
    otherwise it is printed with each event and each time another tenth of the run is done. `parts`: how
    many this run has to do; `noun`: what they are called, plural ("jobs", "segments"); `show` False
    prints nothing and `on_change` is called when the share may have moved (a long edit that is one job
    of a batch)."""

    def __init__(
        self,
        parts: int,
        noun: str = "jobs",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        show: bool = True,
        on_change: Callable[[], None] | None = None,
    ):
        self.jobs = parts
        self.noun = noun
        self.output = ProgressOutput(stream, show)
        self.on_change = on_change
        self.clock = clock
        self.start = clock()
        self.finished = 0
        self.failed = 0
        self.running: dict[str, tuple[str, OverallProgress]] = {}  # part name -> (where, its progress)

    def share(self) -> float:
        """The share of the work done, 0..1 (a failed part counts as done work)."""
        work = self.finished + self.failed + sum(progress.done() for _, progress in self.running.values())
        return min(work / max(self.jobs, 1), 1.0)

    def done(self) -> float:
        """The share done, as `OverallProgress.done` says it: a long edit is one job of a batch."""
        return self.share()

    def line(self) -> str:
        elapsed = self.clock() - self.start
        share = self.share()
        running = ", ".join(
            f"{name} on {server} {100 * progress.done():.0f}%"
            for name, (server, progress) in self.running.items()
        )
        said = f"[{format_duration(elapsed):>12}] {self.finished}/{self.jobs} {self.noun} done"
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
        """A part left its executor: done (True), failed (False) or put back in the queue (None)."""
        self.running.pop(name, None)
        if done is True:
            self.finished += 1
        elif done is False:
            self.failed += 1
        self.event(said)

    def moved(self) -> None:
        """A running part's progress moved."""
        self.output.update(self.line(), self.share(), always=False)
        if self.on_change is not None:
            self.on_change()

    def event(self, said: str) -> None:
        """Print an event on its own line, then the progress line."""
        self.output.say(said)
        self.output.update(self.line(), self.share(), always=True)
        if self.on_change is not None:
            self.on_change()

    def end_line(self) -> None:
        self.output.end_line()
