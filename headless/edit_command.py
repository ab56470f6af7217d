"""Edit a face video with the shipped DiffFERV workflow, through ComfyUI, without the browser.

    python ComfyUI/custom_nodes/<this pack> edit --checkpoint v1-5-pruned-emaonly-fp16.safetensors \\
        --video face.mp4 --source "a photo of a woman" --edit "a photo of an old woman" --output old.mp4

It runs workflows/api/diffferv_face_edit.json (the API form of the workflow the template browser ships)
in a ComfyUI started in this process (nodes/headless_comfy.py), with the inputs set from the command
line, prints each node's progress, and copies the edited video (and an input | edit comparison) out.
Without the browser nothing else differs: same nodes, same validation, same executor.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .host import PACK_ROOT, find_comfyui
from .runner import HeadlessComfy, PromptError

WORKFLOW = PACK_ROOT / "workflows" / "api" / "diffferv_face_edit.json"
DEMO_VIDEO = PACK_ROOT / "workflows" / "media" / "talking_face.mp4"
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
) -> dict:
    """The API-form face-edit workflow with its inputs set. `unet`: a specialized UNet file name in the
    diffusion_models folder, loaded onto the checkpoint's MODEL (the shipped graph has that node
    bypassed, so its API form lacks it: it is added and wired in)."""
    prompt = copy.deepcopy(workflow)
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
    parser.add_argument("--frames", type=int, default=16, help="frames to edit (0 = all)")
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


class ProgressPrinter:
    """Prints one line per node and its progress bar, redrawn in place on a terminal."""

    def __init__(self, prompt: dict):
        self.titles = {
            node_id: node.get("_meta", {}).get("title", node["class_type"])
            for node_id, node in prompt.items()
        }
        self.start = time.monotonic()
        self.node = None

    def __call__(self, value: int, total: int, node_id: str | None) -> None:
        if node_id != self.node:
            if self.node is not None:
                print(file=sys.stderr)
            self.node = node_id
        title = self.titles.get(str(node_id), str(node_id))
        end = "\n" if not sys.stderr.isatty() else ""
        print(
            f"\r[{time.monotonic() - self.start:7.1f} s] {title}: {value}/{total}",
            end=end,
            file=sys.stderr,
            flush=True,
        )


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
        )
        try:
            outputs = comfy.run_prompt(prompt, on_progress=ProgressPrinter(prompt))
        except PromptError as error:
            print(file=sys.stderr)
            sys.exit(f"ComfyUI reported: {error}")
        print(file=sys.stderr)
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
