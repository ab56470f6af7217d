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
from functools import partial
from pathlib import Path

from ..comfyhost.host import find_comfyui
from ..comfyhost.runner import HeadlessComfy, InProcessExecutor, completed
from ..remote.errors import ServerError
from ..remote.runner import RemoteExecutor
from ..remote.server_api import ServerApi
from .checks import preflight
from .cli import CommandError, InputRefusedError, run_command
from .edit_job import EditJob, prepare_job
from .edit_run import run_job
from .flags import parse
from .gpu_fit import Gpu, cuda_gpu
from .plan import byte_size, free_ram, stages
from .progress import OverallProgress
from .server_check import lacks, server_facts, upload_clip, upload_problem
from .server_flags import server_headers


def run(args: argparse.Namespace) -> None:
    if args.server:
        asyncio.run(edit_on_server(args, server_headers(args)))
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
        job = prepare_job(args, checked, free_ram(), gpu)
        show_plan(job, gpu)
        progress = OverallProgress(stages(job.plan, job.clip_frames), job.graph.class_types())
        completed(run_job(job, InProcessExecutor(comfy), progress, workdir))


def show_plan(job: EditJob, gpu: Gpu | None, where: str | None = None) -> None:
    """Print the plan (with the GPU, when there is one, and where the edit runs)."""
    lines = list(job.lines)
    if where is not None:
        lines.insert(0, f"server: {where}")
    if gpu is not None:
        lines.append(f"GPU: {gpu.name}, {byte_size(gpu.free)} free")
    print("plan:\n" + "\n".join("  " + line for line in lines), flush=True)


async def edit_on_server(args: argparse.Namespace, headers: dict[str, str]) -> None:
    """`edit --server URL`: the same checks, plan, workflow and outputs as the in-process edit, run on a
    ComfyUI server. Every check that needs no server comes first, then what the server has (the pack and
    its version, the checkpoint, the UNet, the face models, the upload limit), all before any upload."""
    checked = preflight(args, None)
    async with ServerApi(args.server, headers, timeout=args.lost_after) as api:
        try:
            facts = await server_facts(api)
        except ServerError as error:
            raise InputRefusedError(f"--server: {error}") from None
        job = prepare_job(args, checked, facts.ram_free, facts.gpu)
        needs = job.needs()
        missing = lacks(facts, needs)
        if missing:
            raise InputRefusedError(f"--server: {facts.name} lacks " + "; ".join(missing))
        too_large = upload_problem(facts, "--video", str(checked.video), needs.upload_bytes)
        if too_large:
            raise InputRefusedError(too_large)
        show_plan(job, facts.gpu, where=facts.name)
        progress = OverallProgress(stages(job.plan, job.clip_frames), job.graph.class_types())
        output = Path(args.output).expanduser().resolve()  # downloads are staged beside the output
        scratch = next(folder for folder in output.parents if folder.is_dir())
        upload = partial(upload_clip, api, flag="--video")
        executor = RemoteExecutor(api, args.lost_after, upload, job.output_limit(), job.output_problem)
        with tempfile.TemporaryDirectory(dir=scratch, prefix=".diffferv_") as folder:
            try:
                await run_job(job, executor, progress, Path(folder))
            except ServerError as error:
                raise CommandError(f"--server: {error}") from None


def main(argv: list[str]) -> int:
    verbose = "--verbose" in argv
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, format="%(message)s")
    return run_command("edit", lambda: run(parse(argv)), verbose)
