"""One edit run, wherever it runs: the clip put where the workflow reads it, the workflow run with the
progress line following it and the produced videos brought back (`produce`), then moved to the user's paths,
and the Edit Report written when asked (`run_job`); a long edit's segments are each a `produce`
(long_edit.py). The in-process `edit`, `edit --server` and each job of `batch` go
through it with their executor (``comfyhost.executor.Executor``), so a change to outputs, progress or
failures is made here once."""

from __future__ import annotations

from pathlib import Path

from ..comfyhost.executor import Executor, PromptError
from .edit_job import EditJob
from .failures import WorkflowFailedError
from .outputs import write_outputs, write_report
from .progress import OverallProgress


async def run_job(
    job: EditJob, executor: Executor, progress: OverallProgress, folder: Path, show: bool = True
) -> dict:
    """Run `job` with `executor` (`produce`), move the produced videos to the user's paths and write the
    report when the job asks for one; `show` False prints nothing (a job of a batch). Returns the
    workflow's outputs. A workflow ComfyUI refuses, fails or interrupts raises WorkflowFailedError, in
    the job's terms (its flags, the user's files); nothing is written then."""
    outputs, produced = await produce(job, executor, progress, folder)
    write_outputs(job.targets(produced), show=show)
    if job.args.report:
        write_report(job.prompt, outputs, Path(job.args.output), show=show)
    return outputs


async def produce(
    job: EditJob, executor: Executor, progress: OverallProgress, folder: Path, clip: str | None = None
) -> tuple[dict, dict[str, Path]]:
    """Put the clip (unless it is already there as `clip`), run the workflow (its progress into
    `progress`) and fetch the produced videos (into `folder`, when they come from elsewhere). Returns the
    workflow's outputs and its videos (filename prefix -> file); raises WorkflowFailedError as `run_job`."""
    job.set_video(clip if clip is not None else await executor.put_clip(job.checked.video))
    try:
        outputs = await executor.run(job.prompt, progress.node_progress, progress.node_started)
        produced = await executor.fetch(outputs, job.video_outputs(), folder)
        progress.finish()
    except PromptError as error:
        raise WorkflowFailedError(error, job.graph.titles(), job.files()) from None
    finally:
        progress.end_line()
    return outputs, produced
