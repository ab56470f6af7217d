"""`edit --preview N`: the edit on N frames spread over the clip before the long run (segments.preview),
each edited with the whole pipeline on a short stretch around it (one part each, spread over the workers
as a long edit's segments are), written as one image beside the output: the source frames above, their
edit below, the plan's numbers and the time the whole edit would take, estimated from the preview's own
speed per unit of work (the stages' estimate, headless/plan.py)."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image

from ..segments.plan import Segment
from ..segments.preview import preview_sheet, preview_stretches
from ..video.decode import video_frames
from ..video.staged import staged
from .checks import Checked
from .cli import CommandError
from .edit_job import EditJob, prepare_job
from .long_edit import edited_frames, plan_long_edit, segment_job
from .plan import stages
from .progress import PartsProgress, format_duration
from .workers import Worker, run_part, spread
from .workflow import EDIT_PREFIX


def preview_path(output: str | Path) -> Path:
    """Where the preview of an edit to `output` goes: beside it, NAME.preview.png."""
    return Path(output).expanduser().resolve().with_suffix(".preview.png")


def work_of(job: EditJob) -> float:
    """A job's estimated work in UNet frame-evaluations (its stages' sum)."""
    return sum(stage.work for stage in stages(job.plan, job.clip_frames))


def whole_work(args: argparse.Namespace, checked: Checked, worker: Worker) -> tuple[float, str, str]:
    """The whole edit's estimated work on `worker`, how it runs (in segments or at once) and its plan's
    line that says so."""
    long = plan_long_edit(args, checked, worker.free_ram)
    if long is not None:
        first = long.job(long.segments[0], worker.free_ram, worker.gpu)
        return work_of(first) * len(long.segments), f"in {len(long.segments)} segments", long.lines(first)[1]
    job = prepare_job(args, checked, worker.free_ram, worker.gpu)
    return work_of(job), "at once", job.lines[1]


async def edit_preview(
    args: argparse.Namespace, checked: Checked, workers: list[Worker], folder: Path
) -> Path:
    """Edit the preview's stretches on `workers` (videos fetched into `folder`) and write the image;
    returns its path."""
    total = edited_frames(args, checked)
    stretches = dict(preview_stretches(total, args.preview))
    worker = workers[0]
    whole, how, described = whole_work(args, checked, worker)
    first = segment_job(args, checked, next(iter(stretches)), worker.free_ram, worker.gpu)
    print(
        "plan:\n"
        + "\n".join(
            "  " + line
            for line in [
                first.lines[0],
                f"preview: {len(stretches)} frames of "
                f"{total}, each edited with {first.plan.frames} frames around it",
            ]
        ),
        flush=True,
    )
    shown: dict[int, np.ndarray] = {}
    timing: dict[int, tuple[float, float]] = {}  # stretch -> (seconds, work)
    progress = PartsProgress(len(stretches), "preview frames")

    async def edit(stretch: Segment, worker: Worker) -> None:
        job = segment_job(args, checked, stretch, worker.free_ram, worker.gpu)
        name = f"frame {checked.start_frame + stretch.start + stretches[stretch]}"
        shown_at = stretches[stretch]

        def keep(outputs: dict, produced: dict[str, Path], seconds: float) -> None:
            compared = produced[EDIT_PREFIX + "_compare"]
            shown[stretch.index] = next(itertools.islice(video_frames(compared), shown_at, None))
            timing[stretch.index] = (seconds, work_of(job))

        await run_part(job, worker, progress, name, folder, checked.video, keep)

    todo = deque(stretches)
    try:
        lost = await spread(todo, workers, edit)
    finally:
        progress.end_line()
    if todo:
        said = "; ".join(why for _, why in lost)  # each names its server
        raise CommandError(f"--server: lost {said}")
    timed = [timing[i] for i in sorted(timing)]
    steady = timed[1:] if len(timed) > 1 else timed  # the first loads the models
    rate = sum(s for s, _ in steady) / max(sum(w for _, w in steady), 1e-9)
    spent = sum(s for s, _ in timed)
    frames = [shown[i] for i in sorted(shown)]
    half = frames[0].shape[1] // 2
    fps = checked.clip.fps
    at = ", ".join(
        f"{(checked.start_frame + s.start + k) / fps:.1f} s"
        for s, k in sorted(stretches.items(), key=lambda p: p[0].index)
    )
    lines = [
        f"{checked.video.name}: '{args.source}' -> '{args.edit}', tau_app {args.tau_app:g}, guidance "
        f"{args.guidance:g}, {args.steps} steps; frames at {at}",
        described,
        f"preview: {len(frames)} frames in {format_duration(spent)}; the whole edit of {total} frames ({how}) "
        f"would take about {format_duration(rate * whole)} on {worker.name}",
    ]
    sheet = preview_sheet([f[:, :half] for f in frames], [f[:, half:] for f in frames], lines)
    target = preview_path(args.output)
    with staged([target]) as (partial,):
        Image.fromarray(sheet).save(partial, format="PNG")
    print(lines[-1], file=sys.stderr)
    print(f"wrote {target}", file=sys.stderr)
    return target
