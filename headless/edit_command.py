"""Edit a face video with the shipped DiffFERV workflow, through ComfyUI, without the browser.

    python ComfyUI/custom_nodes/<this pack> edit --checkpoint v1-5-pruned-emaonly-fp16.safetensors \\
        --video face.mp4 --source "a photo of a woman" --edit "a photo of an old woman" --output old.mp4

It runs workflows/api/diffferv_long_clip.json (the API form of the long-clip workflow the template
browser ships) in a ComfyUI started in this process (headless/runner.py), with the inputs set from the
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
from the flags, through graph.py), plan.py (the plan and the stages), runner.py and progress.py (the run),
failures.py, outputs.py; this module puts them in order.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from .checks import cuda_gpu, gpu_problem, preflight
from .cli import InputRefusedError, run_command
from .failures import WorkflowFailedError
from .flags import parse
from .graph import ApiGraph
from .host import find_comfyui
from .outputs import write_outputs, write_report
from .plan import byte_size, free_ram, plan_run, stages
from .progress import OverallProgress
from .runner import HeadlessComfy, PromptError
from .workflow import (
    CHECKPOINT_LOADER,
    EDIT_PREFIX,
    LOAD_VIDEO,
    UNET_LOADER,
    VIDEO_COMBINE,
    FaceMaskSettings,
    prepare_prompt,
)


def run(args: argparse.Namespace) -> None:
    try:
        comfyui = find_comfyui(args.comfyui)
    except FileNotFoundError as error:  # it says where it looked
        raise InputRefusedError(str(error)) from None
    checked = preflight(args, comfyui)
    video, unet_path = checked.video, checked.unet
    with tempfile.TemporaryDirectory(prefix="diffferv_") as folder:
        workdir = Path(folder)
        print(f"starting ComfyUI from {comfyui} ...", file=sys.stderr)
        comfy = HeadlessComfy(workdir, host=comfyui, cpu=True if args.cpu else None)
        shutil.copy(video, workdir / "input" / video.name)
        comfy.add_model_folder("checkpoints", checked.checkpoint.parent)
        if unet_path is not None:
            comfy.add_model_folder("diffusion_models", unet_path.parent)
        try:
            prompt = prepare_prompt(
                checked.workflow,
                video=video.name,
                checkpoint=checked.checkpoint.name,
                source=args.source,
                edit=args.edit,
                frames=args.frames,
                size=args.size,
                steps=args.steps,
                tau_app=args.tau_app,
                guidance=args.guidance,
                cache_mode=args.cache_mode,
                unet=unet_path.name if unet_path is not None else None,
                formats=checked.formats,
                window=args.window,
                overlap=args.overlap,
                keyframe_every=args.keyframe_every if args.keyframe_every > 1 else None,
                face_mask=None
                if args.mask == "none"
                else FaceMaskSettings(
                    args.mask, args.mask_face, args.mask_pick, args.mask_grow, args.mask_feather
                ),
            )
            plan, lines, clip_frames = plan_run(prompt, video, free_ram())
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InputRefusedError(
                f"--workflow: {checked.workflow_path} is not the face-edit workflow ({error})"
            ) from None
        gpu = None if args.cpu else cuda_gpu()
        if gpu is not None:
            lines.append(f"GPU: {gpu.name}, {byte_size(gpu.free)} free")
        print("plan:\n" + "\n".join("  " + line for line in lines), flush=True)
        problem = gpu and gpu_problem(plan, gpu)
        if problem:
            raise InputRefusedError(problem)
        graph = ApiGraph(prompt)
        progress = OverallProgress(stages(plan, clip_frames), graph.class_types())
        try:
            outputs = comfy.run_prompt(
                prompt, on_progress=progress.node_progress, on_node=progress.node_started
            )
            progress.finish()
        except PromptError as error:
            files = {LOAD_VIDEO: video, CHECKPOINT_LOADER: checked.checkpoint}
            if unet_path is not None:
                files[UNET_LOADER] = unet_path
            raise WorkflowFailedError(error, graph.titles(), files) from None
        finally:
            progress.end_line()
        produced = {
            prompt[key]["inputs"]["filename_prefix"]: comfy.output_path(outputs[key]["images"][0])
            for key in graph.ids(VIDEO_COMBINE)
        }
        targets = [(produced[EDIT_PREFIX], args.output)]
        if args.compare:
            targets.append((produced[EDIT_PREFIX + "_compare"], args.compare))
        write_outputs(targets)
        if args.report:
            write_report(prompt, outputs, Path(args.output))


def main(argv: list[str]) -> int:
    verbose = "--verbose" in argv
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, format="%(message)s")
    return run_command("edit", lambda: run(parse(argv)), verbose)
