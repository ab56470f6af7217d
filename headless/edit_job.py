"""One edit made ready to run, wherever it runs: the workflow with the command's values (`prepare_job`),
its plan and the lines that print it, and what the command needs around the run (the files behind node
inputs, for messages in the user's terms; where each produced video goes; what a server must have). The
in-process `edit`, `edit --server` and each job of `batch` go through it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..video.decode import ClipError, probe_clip
from ..windows.schedule import RunPlan
from .checks import Checked
from .cli import InputRefusedError
from .gpu_fit import Gpu, asked_windows, gpu_problem, window_for
from .graph import ApiGraph
from .plan import byte_size, gpu_need_of, plan_run
from .server_check import Needs
from .workflow import (
    CHECKPOINT_LOADER,
    EDIT_PREFIX,
    LOAD_VIDEO,
    UNET_LOADER,
    VIDEO_COMBINE,
    FaceMaskSettings,
    prepare_prompt,
)


@dataclass
class EditJob:
    """An edit ready to run: the command's values (`args`), what the preflight found (`checked`), the
    API-form workflow, its plan and plan lines, and the clip's frame count."""

    args: argparse.Namespace
    checked: Checked
    prompt: dict
    plan: RunPlan
    lines: list[str]
    clip_frames: int

    @property
    def graph(self) -> ApiGraph:
        return ApiGraph(self.prompt)

    def set_video(self, name: str) -> None:
        """The clip's name in the ComfyUI input folder it runs from (a server may rename an upload)."""
        self.graph.inputs(LOAD_VIDEO)["video"] = name

    def files(self) -> dict[str, Path]:
        """Node class -> the user's path of the file it reads (for messages in the user's terms)."""
        files = {LOAD_VIDEO: self.checked.video, CHECKPOINT_LOADER: self.checked.checkpoint}
        if self.checked.unet is not None:
            files[UNET_LOADER] = self.checked.unet
        return files

    def video_outputs(self) -> dict[str, str]:
        """Video Combine node id -> its filename prefix (the edit's, or the comparison's)."""
        return {key: self.prompt[key]["inputs"]["filename_prefix"] for key in self.graph.ids(VIDEO_COMBINE)}

    def targets(self, produced: dict[str, Path]) -> list[tuple[Path, str]]:
        """(produced file, the user's path) for the edit and, when asked, the comparison; `produced`:
        filename prefix -> the file the run wrote."""
        targets = [(produced[EDIT_PREFIX], self.args.output)]
        if self.args.compare:
            targets.append((produced[EDIT_PREFIX + "_compare"], self.args.compare))
        return targets

    def output_limit(self) -> int:
        """The most bytes a video this job produces can hold: its frames as raw RGB, twice (the comparison
        is two clips side by side), and 16 MiB for the container; a larger download is no output of it."""
        height, width = (8 * side for side in self.plan.latent) if self.plan.latent else (4096, 4096)
        return 2 * self.plan.frames * height * width * 3 + 16 * 2**20

    def output_problem(self, path: Path) -> str | None:
        """Why a fetched file cannot be a video of this job (None when it can): it must decode, with the
        edit's frame count."""
        try:
            clip = probe_clip(path, "the file", count_up_to=self.plan.frames + 1)
        except ClipError as error:
            return f"a file that is no video ({error})"
        if clip.frames != self.plan.frames:
            count = f"more than {self.plan.frames}" if clip.frames > self.plan.frames else str(clip.frames)
            return f"a video of {count} frames where the edit makes {self.plan.frames}"
        return None

    def needs(self) -> Needs:
        """What a server must have to run the job."""
        return Needs(
            node_classes=frozenset(self.graph.class_types().values()),
            checkpoint=self.checked.checkpoint.name,
            unet=self.checked.unet.name if self.checked.unet is not None else None,
            face_models=self.args.mask != "none" or self.args.report,
            upload_bytes=self.checked.video.stat().st_size,
        )


def prepare_job(args: argparse.Namespace, checked: Checked, free_ram: int, gpu: Gpu | None = None) -> EditJob:
    """The workflow with the command's values and its plan (`auto` resolved against `free_ram` bytes of
    the machine that runs it), fitted to `gpu` when one is known: when the asked window does not fit its
    free memory, the largest window that does, said in the plan. Refuses a --workflow that is not the
    face-edit workflow, and a run no window makes fit."""
    job = _prepared(args, checked, free_ram, gpu)
    fits = None if gpu is None else window_for(job.plan, gpu)
    if fits is None:
        return job
    if fits:
        overlap = args.overlap if args.overlap < fits else fits // 4
        fitted = _prepared(
            argparse.Namespace(**{**vars(args), "window": fits, "overlap": overlap}), checked, free_ram, gpu
        )
        if window_for(fitted.plan, gpu) is None:
            asked = asked_windows(job.plan)
            need = byte_size(gpu_need_of(job.plan).total)
            fitted.lines.insert(
                fitted.lines.index(next(line for line in fitted.lines if line.startswith("GPU memory"))),
                f"window: {fits} frames, overlap {overlap}, the largest that fits {gpu.name} ({byte_size(gpu.free)} "
                f"free); {asked} (--window {args.window}) would need at least about {need}",
            )
            return fitted
    raise InputRefusedError(gpu_problem(job.plan, gpu))


def _prepared(args: argparse.Namespace, checked: Checked, free_ram: int, gpu: Gpu | None) -> EditJob:
    """`prepare_job` before the window is fitted to the GPU."""
    unet = checked.unet
    try:
        prompt = prepare_prompt(
            checked.workflow,
            video=checked.video.name,
            checkpoint=checked.checkpoint.name,
            source=args.source,
            edit=args.edit,
            frames=args.frames,
            start=checked.start_frame,
            size=args.size,
            steps=args.steps,
            tau_app=args.tau_app,
            guidance=args.guidance,
            cache_mode=args.cache_mode,
            unet=unet.name if unet is not None else None,
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
        gpu_free = None if gpu is None else gpu.free
        plan, lines, clip_frames = plan_run(prompt, checked.video, free_ram, gpu_free, checked.clip)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputRefusedError(
            f"--workflow: {checked.workflow_path} is not the face-edit workflow ({error})"
        ) from None
    return EditJob(args, checked, prompt, plan, lines, clip_frames)
