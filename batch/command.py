"""Edit many clips on one or more ComfyUI servers.

    python ComfyUI/custom_nodes/<this pack> batch --jobs jobs.txt --output-dir edited/ \\
        --server http://gpu-a:8188 --server http://gpu-b:8188 [-- EDIT FLAGS FOR EVERY JOB]

Every job (a line of jobs.txt: VIDEO "SOURCE PROMPT" "EDIT PROMPT" [edit flags], see jobs.py) is checked
as `edit` checks it, and every server as `edit --server` does (the pack and its version, the
checkpoints and UNets the jobs name, the face models when a job asks --mask or --report, room for the
largest upload), before anything is uploaded; a server that lacks something is named with what it lacks
and left out. Then each server runs one job at a time (dispatch.py) under one progress line
(headless.progress.PartsProgress), the outputs land in the output folder and batch_status.json there records each job, so
that running the same command again skips the finished jobs (status.py). Ctrl-C cancels the running
jobs' prompts on their servers (and nobody else's); finished jobs are kept.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from ..headless.checks import check_writable
from ..headless.cli import CommandError, CommandParser, InputRefusedError, run_command
from ..headless.edit_job import prepare_job
from ..headless.flags import add_server_access
from ..headless.plan import byte_size
from ..headless.progress import PartsProgress
from ..headless.server_check import lacks, server_facts, upload_problem
from ..headless.server_flags import server_headers
from ..remote.errors import ServerError
from ..remote.server_api import ServerApi
from .dispatch import Dispatcher, Server
from .jobs import Job, read_jobs
from .lock import FolderLock
from .status import STATUS_FILE, StatusFile

DESCRIPTION = "Edit many face videos with the shipped DiffFERV workflow on one or more ComfyUI servers."


def parser() -> CommandParser:
    parser = CommandParser(
        prog="batch",
        description=DESCRIPTION,
        epilog="Flags after -- are edit flags for every job (a job's own flags come after them and win).",
    )
    add = parser.add_argument
    add(
        "--jobs",
        metavar="FILE",
        required=True,
        help='the job list: one job a line, VIDEO "SOURCE PROMPT" "EDIT PROMPT" [any edit flag, e.g. --steps 30 '
        "--mask face]; # starts a comment; a relative VIDEO is taken from the list's folder; --output and "
        "--compare are names in the output folder (default output: NNN_VIDEO.mp4, NNN the line number)",
    )
    add(
        "--server",
        metavar="URL",
        action="append",
        required=True,
        help="a ComfyUI server with this pack (http:// or https://host:port); give it once per server",
    )
    add(
        "--output-dir",
        metavar="DIR",
        required=True,
        help=f"where the jobs' outputs and {STATUS_FILE} go (made if missing); run the same command again to "
        "skip the jobs already done there",
    )
    add_server_access(parser)
    add("--verbose", action="store_true", help="show the tracebacks of failures")
    return parser


def run(argv: list[str]) -> None:
    own, common = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser().parse_args(own)
    headers = server_headers(args)
    folder = Path(args.output_dir).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise InputRefusedError(f"--output-dir: {folder} is a file; give a folder")
    check_writable("--output-dir", folder / STATUS_FILE, 2**20)
    jobs = read_jobs(Path(args.jobs).expanduser(), folder, common)
    with FolderLock(folder):
        status = StatusFile(folder)
        todo = [job for job in jobs if not status.is_done(job)]
        print(
            f"{count(len(jobs), 'job')} in {args.jobs}: {len(jobs) - len(todo)} done in an earlier run, "
            f"{len(todo)} to run"
        )
        if todo:
            try:
                asyncio.run(run_jobs(args.server, headers, todo, status, folder, args.lost_after))
            finally:
                if status.entries:
                    status.write()


async def run_jobs(
    urls: list[str], headers: dict, jobs: list[Job], status: StatusFile, folder: Path, lost_after: float
) -> None:
    """Check the servers against the jobs, run the jobs on those that have all they need, and say how it
    ended (raising CommandError when a job failed or was not run)."""
    async with AsyncExitStack() as stack:
        apis = [await stack.enter_async_context(ServerApi(url, headers, lost_after)) for url in urls]
        servers = await ready_servers(apis, jobs)
        progress = PartsProgress(len(jobs))
        dispatcher = Dispatcher(jobs, servers, status, progress, folder, lost_after)
        try:
            await dispatcher.run()
        finally:
            progress.end_line()
    said = [f"{job.name}: {why}" for job, why in dispatcher.failed]
    if dispatcher.pending:
        lost = "; ".join(why for _, why in dispatcher.lost)  # each names its server
        said.append(
            f"{count(len(dispatcher.pending), 'job')} not run: every server was lost ({lost}); run the same command "
            "again to run them"
        )
    done = len(jobs) - len(dispatcher.failed) - len(dispatcher.pending)
    print(f"{done} of {count(len(jobs), 'job')} done; outputs in {folder}, status in {status.path}")
    if said:
        raise CommandError("\n".join(said))


async def ready_servers(apis: list[ServerApi], jobs: list[Job]) -> list[Server]:
    """The servers that have what every job needs (each checked once, side by side); the others are
    named with what they lack. Refuses the batch when none is left."""
    needs = [prepare_job(job.args, job.checked, 0).needs() for job in jobs]
    largest = max(jobs, key=lambda job: job.checked.video.stat().st_size)
    answers = await asyncio.gather(*(server_facts(api) for api in apis), return_exceptions=True)
    ready, left_out = [], []
    for api, facts in zip(apis, answers, strict=True):
        if isinstance(facts, ServerError):
            left_out.append(f"{api.name} left out: {facts}")
            continue
        if isinstance(facts, BaseException):
            raise facts
        missing = sorted({phrase for need in needs for phrase in lacks(facts, need)})
        if missing:
            left_out.append(f"{api.name} left out: it lacks " + "; ".join(missing))
            continue
        too_large = upload_problem(
            facts, "--video", str(largest.checked.video), largest.checked.video.stat().st_size
        )
        if too_large:
            left_out.append(f"{api.name} left out: {too_large}")
            continue
        device = f"{facts.gpu.name}, {byte_size(facts.gpu.free)} free" if facts.gpu else "no CUDA GPU"
        print(f"server {api.name}: ready ({device}; {byte_size(facts.ram_free)} RAM free)")
        ready.append(Server(api, facts))
    for line in left_out:
        print(f"server {line}", file=sys.stderr)
    if not ready:
        raise InputRefusedError("--server: no server can run the jobs:\n" + "\n".join(left_out))
    return ready


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def main(argv: list[str]) -> int:
    verbose = "--verbose" in argv
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, format="%(message)s")
    return run_command(
        "batch",
        lambda: run(argv),
        verbose,
        interrupted="the running jobs were cancelled on their servers; the finished ones are kept and a second "
        "run skips them",
    )
