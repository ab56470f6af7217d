"""Edit a face video with the shipped DiffFERV workflow, through ComfyUI, without the browser.

    python ComfyUI/custom_nodes/<this pack> edit --checkpoint v1-5-pruned-emaonly-fp16.safetensors \\
        --video face.mp4 --source "a photo of a woman" --edit "a photo of an old woman" --output old.mp4

It runs workflows/api/diffferv_long_clip.json (the API form of the long-clip workflow the template
browser ships) in a ComfyUI started in this process (headless/runner.py), with the inputs set from the
command line, and copies the edited video (and an input | edit comparison) out. Without the browser
nothing else differs: same nodes, same validation, same executor.

It edits the whole clip unless --frames says otherwise; a clip longer than one context window
(--window, 16 frames) is sampled in overlapping windows, so GPU memory stays that of one window. Before
it starts it prints the plan (frames, windows, UNet calls, the largest UNet batch, the cache), then one
overall progress line with an ETA across loading, optical flow, encoding, inversion, sampling, decoding
and writing (headless/progress.py): redrawn on a terminal, else a line per stage and per tenth of the
work.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from ..editing.preservation import STORE, recompute_bytes, resolve_cache_mode, store_bytes
from ..video.decode import fitted_size, picked_frames, probe_clip
from ..windows.schedule import RunPlan, frame_evaluations, static_windows
from .host import PACK_ROOT, find_comfyui
from .progress import OverallProgress, Stage
from .runner import HeadlessComfy, PromptError

WORKFLOW = PACK_ROOT / "workflows" / "api" / "diffferv_long_clip.json"
DEMO_VIDEO = PACK_ROOT / "workflows" / "media" / "talking_face.mp4"
WINDOWS_NODE = "DiffFERV_ContextWindows"
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CHECKPOINT_URL = "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/" + CHECKPOINT
CHECKPOINT_HELP = f"""No Stable Diffusion 1.5 checkpoint was found.

The edit needs an SD1.5 checkpoint (.safetensors; any SD1.5 fine-tune works, SDXL/SD2/Flux do not).
The shipped workflow uses {CHECKPOINT} (2.1 GB):

    {CHECKPOINT_URL}

Put it in {{checkpoints}}/ or pass its path with --checkpoint /path/to/{CHECKPOINT}."""


def nodes_of(prompt: dict, class_type: str) -> list[dict]:
    return [node for node in prompt.values() if node["class_type"] == class_type]


def only(prompt: dict, class_type: str) -> dict:
    found = nodes_of(prompt, class_type)
    if len(found) != 1:
        raise ValueError(f"the workflow must hold exactly one {class_type} node, it holds {len(found)}")
    return found[0]


def prepare_prompt(
    workflow: dict,
    *,
    video: str,
    checkpoint: str,
    source: str,
    edit: str,
    frames: int,
    size: int,
    steps: int,
    tau_app: float,
    guidance: float,
    cache_mode: str,
    unet: str | None = None,
    prefix: str = "DiffFERV/edit",
    window: int | None = None,
    overlap: int | None = None,
) -> dict:
    """The API-form face-edit workflow with its inputs set. `unet`: a specialized UNet file name in the
    diffusion_models folder, loaded onto the checkpoint's MODEL (the shipped graph has that node
    bypassed, so its API form lacks it: it is added and wired in). `window`, `overlap`: the workflow's
    Context Windows (DiffFERV) node's settings, if it has one; window 0 takes the node out (one batch)."""
    prompt = copy.deepcopy(workflow)
    if window is not None:
        set_windows(prompt, window, overlap)
    only(prompt, "CheckpointLoaderSimple")["inputs"]["ckpt_name"] = checkpoint
    only(prompt, "DiffFERV_LoadVideo")["inputs"].update(video=video, max_frames=frames, short_side=size)
    only(prompt, "DiffFERV_DDIMInvertWithCache")["inputs"].update(
        source_prompt=source, steps=steps, cache_mode=cache_mode
    )
    only(prompt, "DiffFERV_PreservationInjectSampler")["inputs"].update(
        edit_prompt=edit, tau_app=tau_app, guidance=guidance
    )
    edit_video, compare_video = sorted(
        nodes_of(prompt, "DiffFERV_VideoCombine"), key=lambda node: len(node["inputs"]["filename_prefix"])
    )
    edit_video["inputs"]["filename_prefix"] = prefix
    compare_video["inputs"]["filename_prefix"] = prefix + "_compare"
    if unet is not None:
        temporal = only(prompt, "DiffFERV_ApplyTemporalAttention")
        loader_id = str(max(int(key) for key in prompt) + 1)
        prompt[loader_id] = {
            "class_type": "DiffFERV_LoadSpecializedUNet",
            "inputs": {"unet_name": unet, "model": temporal["inputs"]["model"]},
            "_meta": {"title": "Load Specialized UNet (DiffFERV)"},
        }
        temporal["inputs"]["model"] = [loader_id, 0]
    return prompt


def set_windows(prompt: dict, window: int, overlap: int | None) -> None:
    """Set the Context Windows (DiffFERV) node's window (and overlap), or, for window 0, remove it and
    connect its consumers to its input MODEL. A workflow without the node is left as it is."""
    found = [key for key, node in prompt.items() if node["class_type"] == WINDOWS_NODE]
    if not found:
        return
    (key,) = found
    node = prompt[key]
    if window:
        node["inputs"]["context_length"] = window
        if overlap is not None:
            node["inputs"]["context_overlap"] = overlap
        return
    source = node["inputs"]["model"]
    del prompt[key]
    for other in prompt.values():
        for name, value in other["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == key:
                other["inputs"][name] = source


def windows_of(prompt: dict, frames: int) -> list[tuple[int, ...]]:
    """The windows the workflow samples `frames` frames in: those of its Context Windows (DiffFERV) node
    (the static schedule), or the whole clip in one batch."""
    node = next((n for n in prompt.values() if n["class_type"] == WINDOWS_NODE), None)
    if node is None:
        return [tuple(range(frames))]
    return static_windows(frames, node["inputs"]["context_length"], node["inputs"]["context_overlap"])


def size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def plan_run(prompt: dict, video: Path, free_ram: int) -> tuple[RunPlan, list[str]]:
    """What the prepared workflow will do with `video`: the RunPlan and the lines that describe it
    (frames and size, windows, UNet calls, the largest UNet batch, the cache mode and its size). `auto`
    is resolved as the inversion node resolves it, against `free_ram` bytes of free system memory."""
    load = only(prompt, "DiffFERV_LoadVideo")["inputs"]
    invert = only(prompt, "DiffFERV_DDIMInvertWithCache")["inputs"]
    info = probe_clip(video)
    frames = picked_frames(info.frames, load["max_frames"], load["skip_first_frames"], load["every_nth"])
    height, width = fitted_size(info.height, info.width, load["short_side"], 64, load["fit"])
    windows = windows_of(prompt, frames)
    steps, latent = invert["steps"], (height // 8, width // 8)
    store_need = store_bytes(frame_evaluations(windows), steps, latent)
    mode = resolve_cache_mode(invert["cache_mode"], store_need, free_ram)
    plan = RunPlan(frames, tuple(windows), steps, 2 if mode == STORE else 3, store_final_call=mode == STORE)
    cache = (
        f"store: {size(store_need)} of features in RAM"
        if mode == STORE
        else f"recompute: {size(recompute_bytes(frames, steps, latent))} of inverted latents "
        f"(store would need {size(store_need)})"
    )
    lines = [
        f"video: {video.name}, {info.frames} frames of {info.width}x{info.height}",
        f"edit: {frames} frames at {width}x{height}, {steps} + {steps} DDIM steps, cache {cache}",
        *plan.describe()[1:],
    ]
    return plan, lines


STAGE_WORK_PER_FRAME = {
    "load": 0.05,
    "optical flow": 0.1,
    "encode": 0.3,
    "decode": 0.6,
    "write": 0.05,
    "report": 0.2,
}
"""Estimated work of the stages around the UNet, per frame, in UNet frame-evaluations (rough: the ETA
settles once the inversion runs)."""


def stages(plan: RunPlan) -> list[Stage]:
    """The run's stages and their estimated work (see headless/progress.py)."""
    per_step = frame_evaluations(list(plan.windows))
    unet = {
        "inversion": per_step * (plan.steps + int(plan.store_final_call)),
        "sampling": per_step * plan.steps * plan.sampling_chunks,
    }
    work = {name: share * plan.frames for name, share in STAGE_WORK_PER_FRAME.items()} | unet
    types = {
        "load": {"DiffFERV_LoadVideo", "CheckpointLoaderSimple", "DiffFERV_LoadSpecializedUNet"},
        "optical flow": {"DiffFERV_ComputeFlowTrajectories"},
        "encode": {"VAEEncode"},
        "inversion": {"DiffFERV_DDIMInvertWithCache"},
        "sampling": {"DiffFERV_PreservationInjectSampler"},
        "decode": {"VAEDecode"},
        "write": {"DiffFERV_VideoCombine", "ImageStitch"},
        "report": {"DiffFERV_EditReport"},
    }
    order = ("load", "optical flow", "encode", "inversion", "sampling", "decode", "write", "report")
    return [Stage(name, frozenset(types[name]), work[name]) for name in order]


def find_checkpoint(given: str | None, comfyui: Path) -> Path:
    """The checkpoint file: the given path, else the shipped workflow's one in ComfyUI's checkpoints
    folder. Exits with download instructions when there is none."""
    folder = comfyui / "models" / "checkpoints"
    path = Path(given).expanduser() if given else folder / CHECKPOINT
    if path.is_file():
        return path.resolve()
    if given:
        sys.exit(f"--checkpoint: no file at {path}\n\n" + CHECKPOINT_HELP.format(checkpoints=folder))
    sys.exit(CHECKPOINT_HELP.format(checkpoints=folder))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edit",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", help=f"SD1.5 checkpoint file (default: {CHECKPOINT} in ComfyUI's models/checkpoints)"
    )
    parser.add_argument("--video", default=str(DEMO_VIDEO), help="the face video to edit")
    parser.add_argument("--source", default="a photo of a woman", help="what the video shows")
    parser.add_argument("--edit", default="a photo of an old woman", help="the source prompt with the change")
    parser.add_argument(
        "--tau-app", type=float, default=0.9, help="0.9 for texture edits, 0.7 for shape edits"
    )
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and sampling")
    parser.add_argument("--frames", type=int, default=0, help="frames to edit (0 = the whole clip)")
    parser.add_argument(
        "--window",
        type=int,
        default=16,
        help="context window in frames for long clips (0 = all frames in one batch)",
    )
    parser.add_argument("--overlap", type=int, default=4, help="frames neighbouring windows share")
    parser.add_argument("--size", type=int, default=512, help="short side in pixels (a multiple of 64)")
    parser.add_argument("--cache-mode", choices=("auto", "store", "recompute"), default="auto")
    parser.add_argument(
        "--unet", help="a face-specialized UNet (.safetensors) to use instead of the checkpoint's"
    )
    parser.add_argument("--output", default="diffferv_edit.mp4", help="where to write the edited video")
    parser.add_argument("--compare", help="also write an input | edit comparison video here")
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the Edit Report (PSNR, SSIM, warping error, identity distances) and write its JSON "
        "beside the video (OUTPUT with the suffix .report.json)",
    )
    parser.add_argument("--workflow", default=str(WORKFLOW), help="the API-form workflow to run")
    parser.add_argument("--comfyui", help="the ComfyUI folder (default: the one this pack is installed in)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present (slow)")
    parser.add_argument("--verbose", action="store_true", help="show ComfyUI's log")
    return parser.parse_args(argv)


def free_ram() -> int:
    """Free system memory in bytes, as ComfyUI measures it for the CPU (psutil's available memory)."""
    import psutil

    return int(psutil.virtual_memory().available)


def main(argv: list[str]) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    comfyui = find_comfyui(args.comfyui)
    checkpoint = find_checkpoint(args.checkpoint, comfyui)
    video = Path(args.video).expanduser().resolve()
    if not video.is_file():
        sys.exit(f"--video: no file at {video}")
    with tempfile.TemporaryDirectory(prefix="diffferv_") as folder:
        workdir = Path(folder)
        print(f"starting ComfyUI from {comfyui} ...", file=sys.stderr)
        comfy = HeadlessComfy(workdir, host=comfyui, cpu=True if args.cpu else None)
        shutil.copy(video, workdir / "input" / video.name)
        comfy.add_model_folder("checkpoints", checkpoint.parent)
        unet = None
        if args.unet:
            unet_path = Path(args.unet).expanduser().resolve()
            if not unet_path.is_file():
                sys.exit(f"--unet: no file at {unet_path}")
            comfy.add_model_folder("diffusion_models", unet_path.parent)
            unet = unet_path.name
        prompt = prepare_prompt(
            json.loads(Path(args.workflow).read_text()),
            video=video.name,
            checkpoint=checkpoint.name,
            source=args.source,
            edit=args.edit,
            frames=args.frames,
            size=args.size,
            steps=args.steps,
            tau_app=args.tau_app,
            guidance=args.guidance,
            cache_mode=args.cache_mode,
            unet=unet,
            window=args.window,
            overlap=args.overlap,
        )
        plan, lines = plan_run(prompt, video, free_ram())
        print("plan:\n" + "\n".join("  " + line for line in lines), flush=True)
        progress = OverallProgress(stages(plan), {key: node["class_type"] for key, node in prompt.items()})
        try:
            outputs = comfy.run_prompt(
                prompt, on_progress=progress.node_progress, on_node=progress.node_started
            )
        except PromptError as error:
            print(file=sys.stderr)
            sys.exit(f"ComfyUI reported: {error}")
        progress.finish()
        written = {}
        for node_id, node in prompt.items():
            if node["class_type"] == "DiffFERV_VideoCombine":
                written[node["inputs"]["filename_prefix"]] = comfy.output_path(outputs[node_id]["images"][0])
        targets = [(written["DiffFERV/edit"], args.output)]
        if args.compare:
            targets.append((written["DiffFERV/edit_compare"], args.compare))
        for produced, target in targets:
            Path(target).expanduser().parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(produced, target)
            print(f"wrote {Path(target).expanduser().resolve()}", file=sys.stderr)
        if args.report:
            write_report(prompt, outputs, Path(args.output))
    return 0


def write_report(prompt: dict, outputs: dict, video: Path) -> Path:
    """Prints the Edit Report node's text and writes its JSON beside ``video`` (``NAME.report.json``)."""
    node_id = next(key for key, node in prompt.items() if node["class_type"] == "DiffFERV_EditReport")
    shown = outputs[node_id]
    print(shown["text"][0])
    target = video.expanduser().resolve().with_suffix(".report.json")
    target.write_text(shown["report"][0] + "\n")
    print(f"wrote {target}", file=sys.stderr)
    return target
