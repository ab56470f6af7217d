"""Edit a face video with the shipped DiffFERV workflow, through ComfyUI, without the browser.

    python ComfyUI/custom_nodes/<this pack> edit --checkpoint v1-5-pruned-emaonly-fp16.safetensors \\
        --video face.mp4 --source "a photo of a woman" --edit "a photo of an old woman" --output old.mp4

It runs workflows/api/diffferv_long_clip.json (the API form of the long-clip workflow the template
browser ships) in a ComfyUI started in this process (comfyhost/runner.py), with the inputs set from the
command line, and copies the edited video (and an input | edit comparison) out. Without the browser
nothing else differs: same nodes, same validation, same executor.

It edits the whole clip unless --frames says otherwise; a clip longer than one context window
(--window, 16 frames) is sampled in overlapping windows, so GPU memory stays that of one window. With
--keyframe-every K it runs workflows/api/diffferv_speed_mode.json instead: every K-th frame (and the
last) is edited, the frames between take the keyframes' edit along the optical flow. Before
it starts it prints the plan (frames, windows, UNet calls, the largest UNet batch, the cache, the GPU
memory the run needs; on a CUDA GPU a window that cannot fit it is refused, naming the one that fits),
then one overall progress line with an ETA across loading, optical flow, encoding, inversion, sampling,
decoding, writing and the report (headless/progress.py): redrawn on a terminal, else a line per stage
and per tenth of the work.

A clip longer than a segment (`--segment`, by default what half the free RAM holds) is edited in
segments, each its own run of the workflow, written into the output as they finish and kept beside it so
that the same command resumes an interrupted edit (long_edit.py); with several --server flags the
segments go to whichever server is free (workers.py). `--preview N` edits N short stretches spread over
the clip instead and writes one image with the time the whole edit would take (preview.py).

`--mask face` (or face+hair) confines the edit to one face: Face Mask (DiffFERV) is added on the loaded
frames and its mask connected to the sampler, which keeps the clip outside it as it is (`set_face_mask`).

Bad input ends in one sentence in the command's own terms (flags, the user's paths), exit status 2,
before any model loads: values and files are checked first (checks.py), then ComfyUI's validator checks
the workflow (prompt lengths among others) and its messages are put in flag names (failures.py). A
failure while running exits with 1, an interruption (Ctrl-C) with 130 (cli.py); no partial output file
is left (outputs.py).

The parts: flags.py (the command line), checks.py (the preflight), workflow.py (the workflow's inputs set
from the flags, through graph.py), plan.py (the plan and the stages), edit_run.py (the run, with the in-process or the remote executor),
failures.py, outputs.py; this module puts them in order.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

from ..comfyhost.host import find_comfyui
from ..comfyhost.runner import HeadlessComfy, InProcessExecutor, completed
from ..remote.errors import ServerError
from ..remote.runner import RemoteExecutor
from ..remote.server_api import ServerApi
from ..segments.preview import preview_stretches
from .checks import Checked, preflight
from .cli import CommandError, InputRefusedError, run_command
from .edit_job import EditJob, prepare_job
from .edit_run import run_job
from .flags import parse
from .gpu_fit import Gpu, cuda_gpu
from .long_edit import LongEdit, edited_frames, plan_long_edit, segment_job
from .plan import byte_size, free_ram, stages
from .preview import edit_preview
from .progress import OverallProgress
from .server_check import lacks, server_facts, upload_clip, upload_problem
from .server_flags import server_headers
from .workers import Worker


def run(args: argparse.Namespace) -> None:
    if args.server:
        asyncio.run(edit_on_servers(args, server_headers(args)))
        return
    try:
        comfyui = find_comfyui(args.comfyui)
    except FileNotFoundError as error:  # it says where it looked
        raise InputRefusedError(str(error)) from None
    checked = preflight(args, comfyui)
    with tempfile.TemporaryDirectory(prefix="diffferv_") as folder:
        workdir = Path(folder)
        print(f"starting ComfyUI from {comfyui} ...", file=sys.stderr)
        comfy = HeadlessComfy(workdir, host=comfyui, cpu=True if args.cpu else None)
        comfy.add_model_folder("checkpoints", checked.checkpoint.parent)
        if checked.unet is not None:
            comfy.add_model_folder("diffusion_models", checked.unet.parent)
        gpu = None if args.cpu else cuda_gpu()
        ram = free_ram()
        executor = InProcessExecutor(comfy)
        if args.preview:
            completed(edit_preview(args, checked, [Worker("this machine", executor, ram, gpu)], workdir))
            return
        long = plan_long_edit(args, checked, ram)
        if long is not None:
            first = long.job(long.segments[0], ram, gpu)
            show_plan(first, gpu, lines=long.lines(first))
            completed(long.run([Worker("this machine", executor, ram, gpu)]))
            return
        job = prepare_job(args, checked, ram, gpu)
        show_plan(job, gpu)
        progress = OverallProgress(stages(job.plan, job.clip_frames), job.graph.class_types())
        completed(run_job(job, executor, progress, workdir))


def show_plan(
    job: EditJob, gpu: Gpu | None, where: str | None = None, lines: list[str] | None = None
) -> None:
    """Print the plan (`lines`, default the job's; with the GPU, when there is one, and where the edit
    runs)."""
    lines = list(job.lines if lines is None else lines)
    if where is not None:
        lines.insert(0, f"server: {where}")
    if gpu is not None:
        lines.append(f"GPU: {gpu.name}, {byte_size(gpu.free)} free")
    print("plan:\n" + "\n".join("  " + line for line in lines), flush=True)


async def edit_on_servers(args: argparse.Namespace, headers: dict[str, str]) -> None:
    """`edit --server URL [--server URL ...]`: the same checks, plan, workflow and outputs as the in-process
    edit, run on ComfyUI servers. Every check that needs no server comes first, then what each server has
    (the pack and its version, the checkpoint, the UNet, the face models, the upload limit), all before
    any upload; a server that lacks something is named and left out. A long edit's segments go to
    whichever server is free; otherwise the edit runs on the first server that can run it."""
    checked = preflight(args, None)
    async with AsyncExitStack() as stack:
        apis = [
            await stack.enter_async_context(ServerApi(url, headers, timeout=args.lost_after))
            for url in args.server
        ]
        answers = await asyncio.gather(*(server_facts(api) for api in apis), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, ServerError):
                raise answer
        known = [facts for facts in answers if not isinstance(facts, ServerError)]
        long = plan_long_edit(args, checked, min(f.ram_free for f in known)) if known else None
        ready, left_out = [], []  # ready: (api, facts, the job fitted to it: the first segment's when long)
        for api, facts in zip(apis, answers, strict=True):
            job = None if isinstance(facts, ServerError) else server_job(args, checked, long, facts)
            problem = server_problem(checked, facts, job)
            if problem:
                left_out.append(problem)
            else:
                ready.append((api, facts, job))
        if not ready:
            raise InputRefusedError("\n".join(left_out))
        for line in left_out:
            print(f"left out: {line}", file=sys.stderr)
        output = Path(args.output).expanduser().resolve()  # downloads are staged beside the output
        scratch = next(folder for folder in output.parents if folder.is_dir())
        if args.preview:
            stretch = preview_stretches(edited_frames(args, checked), args.preview)[0][0]
            workers = [
                remote_worker(
                    args, api, facts, segment_job(args, checked, stretch, facts.ram_free, facts.gpu)
                )
                for api, facts, _ in ready
            ]
            with tempfile.TemporaryDirectory(dir=scratch, prefix=".diffferv_") as folder:
                await edit_preview(args, checked, workers, Path(folder))
            return
        if long is not None:
            workers = [remote_worker(args, api, facts, job) for api, facts, job in ready]
            _, facts, first = ready[0]
            show_plan(first, facts.gpu, where=", ".join(f.name for _, f, _ in ready), lines=long.lines(first))
            try:
                await long.run(workers)
            except ServerError as error:
                raise CommandError(f"--server: {error}") from None
            return
        api, facts, job = ready[0]
        show_plan(job, facts.gpu, where=facts.name)
        progress = OverallProgress(stages(job.plan, job.clip_frames), job.graph.class_types())
        upload = partial(upload_clip, api, flag="--video")
        executor = RemoteExecutor(api, args.lost_after, upload, job.output_limit(), job.output_problem)
        with tempfile.TemporaryDirectory(dir=scratch, prefix=".diffferv_") as folder:
            try:
                await run_job(job, executor, progress, Path(folder))
            except ServerError as error:
                raise CommandError(f"--server: {error}") from None


def remote_worker(args: argparse.Namespace, api: ServerApi, facts, job: EditJob) -> Worker:
    """A server as a worker of a long edit or a preview whose parts are each like `job` (their videos
    checked against it)."""
    upload = partial(upload_clip, api, flag="--video")
    executor = RemoteExecutor(api, args.lost_after, upload, job.output_limit(), job.output_problem)
    return Worker(facts.name, executor, facts.ram_free, facts.gpu)


def server_job(args: argparse.Namespace, checked: Checked, long: LongEdit | None, facts) -> EditJob:
    """The edit as it runs on a server (fitted to its RAM and GPU): the first segment's of a long edit."""
    if long is not None:
        return long.job(long.segments[0], facts.ram_free, facts.gpu)
    return prepare_job(args, checked, facts.ram_free, facts.gpu)


def server_problem(checked: Checked, facts, job: EditJob | None) -> str | None:
    """Why a server cannot run `job`, in one sentence (None when it can): it did not answer as a ComfyUI
    server (`facts` is the error), it lacks something the edit needs, or the clip is over its upload
    limit."""
    if isinstance(facts, ServerError):
        return f"--server: {facts}"
    needs = job.needs()
    missing = lacks(facts, needs)
    if missing:
        return f"--server: {facts.name} lacks " + "; ".join(missing)
    return upload_problem(facts, "--video", str(checked.video), needs.upload_bytes)


def main(argv: list[str]) -> int:
    verbose = "--verbose" in argv
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, format="%(message)s")
    return run_command("edit", lambda: run(parse(argv)), verbose)
