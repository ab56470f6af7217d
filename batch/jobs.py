"""The job list: one edit a line, `VIDEO "SOURCE PROMPT" "EDIT PROMPT" [edit flags]`, shell-quoted, `#`
starting a comment; a relative video path is taken from the job file's folder. Each job's outputs go
under the output folder: `--output`, `--compare` (relative names there; default output
`NNN_VIDEO.mp4`, NNN the line number) and, with `--report`, the report's JSON beside the video. Flags
that choose where or how the edit runs (`--server`, `--cpu`, ...) belong to the batch command, not to a
line.

`read_jobs` parses and checks every line with the `edit` command's own parser and preflight (values,
video, output room, workflow) and refuses the list with every problem, each with its line; a job's
`key` says what it is (its line's words, its video's size and time, its outputs' names), so a status file can tell a
finished job from a changed one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from ..headless.checks import Checked, preflight
from ..headless.cli import InputRefusedError
from ..headless.flags import parse
from ..headless.outputs import report_path

NOT_IN_A_LINE = (
    "--server",
    "--preview",
    "--token-env",
    "--headers-file",
    "--lost-after",
    "--cpu",
    "--comfyui",
    "--verbose",
)
"""Edit flags that say where or how the edit runs: the batch command's, not a job's."""


@dataclass(frozen=True)
class Job:
    """One line of the job list, parsed (`args`: the edit's flags) and checked (`checked`)."""

    number: int  # the line number in the job file
    words: tuple[str, ...]
    args: argparse.Namespace
    checked: Checked
    key: str

    @property
    def name(self) -> str:
        return f"job {self.number} ({self.checked.video.name})"

    def outputs(self) -> list[Path]:
        """The files the job writes."""
        paths = [Path(self.args.output)]
        if self.args.compare:
            paths.append(Path(self.args.compare))
        if self.args.report:
            paths.append(report_path(self.args.output))
        return paths


def split_line(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def inside(folder: Path, flag: str, given: str) -> str:
    """A job's output name as a path under the output folder; refuses one that leaves it."""
    path = Path(given)
    resolved = (folder / path).resolve()
    if path.is_absolute() or ".." in path.parts or not resolved.is_relative_to(folder):
        raise InputRefusedError(
            f"{flag} {given}: give a name inside the output folder (no absolute path, no ..)"
        )
    return str(resolved)


def job_args(
    words: list[str], number: int, base: Path, folder: Path, common: list[str]
) -> argparse.Namespace:
    """The edit's flags of one job: its video, prompts and flags after the batch's common ones."""
    if len(words) < 3 or words[0].startswith("--") or words[1].startswith("--") or words[2].startswith("--"):
        raise InputRefusedError('give VIDEO "SOURCE PROMPT" "EDIT PROMPT" first, then any edit flags')
    video, source, edit, flags = words[0], words[1], words[2], words[3:]
    for word in [*common, *flags]:
        if word.split("=", 1)[0] in (*NOT_IN_A_LINE, "--video", "--source", "--edit"):
            raise InputRefusedError(
                f"{word.split('=', 1)[0]} is not a job's flag (video and prompts come first; "
                "--server and the access flags are the batch command's; preview a clip with edit --preview)"
            )
    video_path = Path(video).expanduser()
    if not video_path.is_absolute():
        video_path = base / video_path
    args = parse(["--video", str(video_path), "--source", source, "--edit", edit, *common, *flags])
    given_output = "--output" in flags or any(word.startswith("--output=") for word in flags)
    name = args.output if given_output else f"{number:03d}_{video_path.stem}.mp4"
    args.output = inside(folder, "--output", name)
    if args.compare:
        args.compare = inside(folder, "--compare", args.compare)
    args.server = args.token_env = args.headers_file = None
    return args


def job_key(words: list[str], common: list[str], video: Path, outputs: list[str]) -> str:
    """What the job is: its words, the batch's common flags, its video's size and time and the names of
    its outputs (so a line moved to another number, whose default output name changes, is another job)."""
    stat = video.stat()
    said = json.dumps([words, common, str(video), stat.st_size, stat.st_mtime_ns, outputs])
    return hashlib.sha256(said.encode()).hexdigest()[:16]


def read_jobs(path: Path, folder: Path, common: list[str]) -> list[Job]:
    """Every job of the list at `path`, checked, its outputs under `folder`; refuses the list with every
    problem found, one line each (`--jobs FILE line N: ...`)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise InputRefusedError(f"--jobs: {path} cannot be read ({error.strerror})") from None
    jobs, problems, claimed = [], [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            words = split_line(line)
        except ValueError as error:
            problems.append(f"--jobs: {path} line {number}: {error} (quote each prompt once)")
            continue
        if not words:
            continue
        try:
            args = job_args(words, number, path.parent.resolve(), folder, common)
            checked = preflight(args, None)
            job = Job(number, tuple(words), args, checked, "")
            named = [str(output.relative_to(folder.resolve())) for output in job.outputs()]
            job = replace(job, key=job_key(words, common, checked.video, named))
        except InputRefusedError as refused:
            problems += [
                f"--jobs: {path} line {number}: {said}" for said in str(refused).splitlines() if said
            ]
            continue
        for output in job.outputs():
            if output in claimed:
                problems.append(
                    f"--jobs: {path} line {number} writes {output}, as line {claimed[output]} does; "
                    "give one of them another --output"
                )
            claimed[output] = number
        jobs.append(job)
    if problems:
        raise InputRefusedError("\n".join(problems))
    if not jobs:
        raise InputRefusedError(f'--jobs: {path} holds no job (one a line: VIDEO "SOURCE" "EDIT" [flags])')
    return jobs
