"""A clip longer than one segment edited in segments (segments/), in this process or on one or more
servers: each segment is an edit of its own (`edit_run.produce`, Load Video's skip_first_frames and
max_frames pick its frames) whose lossless videos are kept beside the output and written into it in
order as they finish (`segments.assembly`), so the host holds one segment whatever the clip's length, and
a run that stops (Ctrl-C, a lost server, a crash) is resumed by the same command without editing a
finished segment again.

`plan_long_edit` decides: the segment length (--segment, or from the free RAM of the machine that runs
the edit and the bytes a frame costs there), the segments, and None when one segment holds the clip (the
ordinary edit). `LongEdit.run` spreads the segments over the workers (workers.py: this process's ComfyUI,
or servers, each taking the next segment when free; a lost server's segment goes back to the queue for
another; when every server is lost the run stops, and is resumed later).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..editing.preservation import STORE, recompute_bytes, store_bytes
from ..remote.errors import ServerLostError
from ..segments.assembly import PRODUCED, Assembler, Output, SegmentFolder, segments_folder
from ..segments.plan import Segment, host_bytes_per_frame, plan_segments, segment_frames
from ..video.audio import AudioSpan, audio_format, audio_span
from ..video.decode import FIT, SIZE_MULTIPLE, edited_span, fitted_size, picked_frames
from ..video.encode import FORMATS, QUALITY, Sound
from .checks import Checked
from .cli import InputRefusedError
from .edit_job import EditJob, prepare_job
from .gpu_fit import Gpu
from .outputs import report_of, report_path
from .plan import byte_size
from .progress import PartsProgress
from .workers import Worker, run_part, spread
from .workflow import EDIT_PREFIX, VIDEO_COMBINE

LOSSLESS = next(name for name, spec in FORMATS.items() if spec.extension == PRODUCED)
"""The Video Combine format of a segment's videos: exact frames, blended and encoded once into the output."""
NOT_THE_EDIT = frozenset(
    {
        "output",
        "compare",
        "server",
        "token_env",
        "headers_file",
        "lost_after",
        "verbose",
        "comfyui",
        "start",
        "preview",
    }
)
"""Flags that do not change the edited frames (where the output goes, how servers are reached): a run that
differs only in them resumes an interrupted one. (--start is in the key as the frame it names.)"""


@dataclass
class LongEdit:
    """A clip edited in `segments` (see the module docstring): the command's values, what the preflight
    found, the edited frames (`total`), the segment length and how it was chosen (`chosen`)."""

    args: argparse.Namespace
    checked: Checked
    total: int
    length: int
    chosen: str
    segments: list[Segment]
    folder: SegmentFolder | None = field(default=None, init=False)
    """Made when the run starts (planning alone, e.g. for a preview, leaves nothing on disk)."""

    @property
    def output(self) -> Path:
        return Path(self.args.output).expanduser().resolve()

    @property
    def products(self) -> tuple[str, ...]:
        return ("edit", "compare") if self.args.compare else ("edit",)

    def key(self) -> dict:
        """What makes two runs the same edit: the flags that change the frames, the clip, the models (a
        server's by name), the first frame and the frame count."""
        video = self.checked.video.stat()
        files = [self.checked.checkpoint, *([self.checked.unet] if self.checked.unet else [])]
        key = {
            "flags": {k: v for k, v in sorted(vars(self.args).items()) if k not in NOT_THE_EDIT},
            "compare": bool(self.args.compare),  # whether, not where
            "video": [str(self.checked.video), video.st_size, video.st_mtime_ns],
            "models": [[path.name, path.stat().st_size if path.is_file() else None] for path in files],
            "start": self.checked.start_frame,
            "frames": self.total,
        }
        return json.loads(json.dumps(key, default=str))

    def job(self, segment: Segment, free_ram: int, gpu: Gpu | None) -> EditJob:
        return segment_job(self.args, self.checked, segment, free_ram, gpu)

    def lines(self, first: EditJob) -> list[str]:
        """The plan: the clip, the segments and how their length was chosen, then the first segment's own
        plan (its windows, work and memory)."""
        shared = max(s.blend_in for s in self.segments)
        count, plan = len(self.segments), first.plan
        segment_lines = [
            f"segments: {self.total} frames in {count} segments of {self.segments[0].frames} "
            f"(--segment {self.length}: {self.chosen}); neighbours share {shared} frames, crossfaded; each segment "
            f"is written to {segments_folder(self.output)} as it finishes, so the same command resumes an "
            "interrupted run",
            f"work: {count} x {plan.inversion_calls + plan.sampling_calls} UNet calls, "
            f"{count * plan.frame_evaluations} UNet frame-evaluations in all ({plan.frame_evaluations} a segment)",
        ]
        return [first.lines[0], *segment_lines, *(f"each segment: {line}" for line in first.lines[1:])]

    async def run(self, workers: list[Worker], progress: PartsProgress | None = None) -> None:
        """Edit every segment not edited yet on `workers`, write each into the outputs as soon as it and
        those before it are edited, and join the outputs at the end (see the module docstring). `progress`:
        the line to follow it on (one of len(segments) parts; default: a line of its own, and what was
        written said). Raises ServerLostError, saying what is kept, when every worker was lost."""
        show = progress is None
        progress = progress or PartsProgress(len(self.segments), "segments")
        self.folder = SegmentFolder(self.output, self.key(), self.segments, self.products)
        assembler = Assembler(self.folder, self.outputs(), self.checked.clip.fps)
        todo = deque(s for s in self.segments if not self.folder.is_edited(s.index))
        progress.finished = len(self.segments) - len(todo)
        if self.folder.cleared:
            progress.output.say(f"{self.folder.path} held another edit's segments: cleared")
        if progress.finished:
            progress.output.say(
                f"resuming: {progress.finished} of {len(self.segments)} segments were edited by an earlier run "
                f"(kept in {self.folder.path}); they are not edited again"
            )
        try:
            self._write_edited(assembler)
            lost = await spread(todo, workers, partial(self._edit, assembler=assembler, progress=progress))
        except BaseException:  # a failure, Ctrl-C: what is finished stays for the next run
            progress.end_line()
            if self.kept() and show:
                print(f"{self.kept()}the same command resumes from there", file=sys.stderr)
            raise
        progress.end_line()
        if todo:
            said = "; ".join(why for _, why in lost)  # each names its server
            raise ServerLostError(f"{said}; {self.kept()}run the same command again to resume")
        written = assembler.finish(self.sound)
        if self.args.report:
            self.write_report(show)
        self.folder.remove()
        if show:
            for path in written:
                print(f"wrote {path}", file=sys.stderr)

    async def _edit(
        self, segment: Segment, worker: Worker, assembler: Assembler, progress: PartsProgress
    ) -> None:
        """Edit one segment on `worker`, keep its videos (and report), and write what can be written."""
        job = self.job(segment, worker.free_ram, worker.gpu)
        name = f"segment {segment.index + 1}/{len(self.segments)} (frames {segment.start}-{segment.end - 1})"
        incoming = self.folder.path / f"incoming_{segment.index:04d}"
        incoming.mkdir(exist_ok=True)

        def keep(outputs: dict, produced: dict[str, Path], seconds: float) -> None:
            notes = {"report": json.dumps(report_of(job.prompt, outputs))} if self.args.report else None
            files = {"edit": produced[EDIT_PREFIX]}
            if self.args.compare:
                files["compare"] = produced[EDIT_PREFIX + "_compare"]
            self.folder.keep(segment.index, files, notes)
            shutil.rmtree(incoming, ignore_errors=True)

        await run_part(job, worker, progress, name, incoming, self.checked.video, keep)
        self._write_edited(assembler)

    def _write_edited(self, assembler: Assembler) -> None:
        """Write every edited segment that follows the written ones into the outputs."""
        index = assembler.next_to_write()
        while index < len(self.segments) and self.folder.is_edited(index):
            assembler.write(index)
            index += 1

    def outputs(self) -> list[Output]:
        quality = int(
            next(
                (
                    n["inputs"].get("quality", QUALITY.default)
                    for n in self.checked.workflow.values()
                    if n.get("class_type") == VIDEO_COMBINE
                ),
                QUALITY.default,
            )
        )
        paths = [self.args.output, *([self.args.compare] if self.args.compare else [])]
        return [
            Output(product, Path(path).expanduser().resolve(), FORMATS[fmt], quality)
            for product, path, fmt in zip(self.products, paths, self.checked.formats, strict=False)
        ]

    def sound(self) -> Sound | None:
        """The edited span's sound, read as it is muxed (None: the clip has none)."""
        found = audio_format(self.checked.video)
        if found is None:
            return None
        start, end = edited_span(self.checked.video, self.checked.start_frame, self.total)
        return Sound(*found, audio_span(AudioSpan(self.checked.video, start, end)))

    def write_report(self, show: bool = True) -> Path:
        """The Edit Report of each segment, in one JSON beside the video, and (with `show`) their texts
        printed."""
        entries = []
        for segment in self.segments:
            text, report = json.loads(self.folder.note(segment.index, "report"))
            if show:
                print(f"segment {segment.index + 1} (frames {segment.start}-{segment.end - 1}):\n{text}")
            entries.append({"frames": [segment.start, segment.end], "report": json.loads(report)})
        target = report_path(self.args.output)
        target.write_text(json.dumps({"segments": entries}, indent=1) + "\n")
        if show:
            print(f"wrote {target}", file=sys.stderr)
        return target

    def kept(self) -> str:
        """ "3 edited segments are kept in FOLDER; " (empty when none is)."""
        edited = sum(self.folder.is_edited(s.index) for s in self.segments)
        return f"{edited} edited segments are kept in {self.folder.path}; " if edited else ""


def segment_job(
    args: argparse.Namespace, checked: Checked, segment: Segment, free_ram: int, gpu: Gpu | None
) -> EditJob:
    """The edit of one segment of the edited range (or a preview's stretch): its frames of the clip,
    written losslessly, the plan fitted to the machine that runs it."""
    args = argparse.Namespace(**{**vars(args), "frames": segment.frames})
    checked = dataclasses.replace(
        checked, start_frame=checked.start_frame + segment.start, formats=(LOSSLESS, LOSSLESS)
    )
    return prepare_job(args, checked, free_ram, gpu)


def edited_frames(args: argparse.Namespace, checked: Checked) -> int:
    """The frames the edit takes: --frames (0: all) from its first frame on."""
    return picked_frames(checked.clip.frames, args.frames, checked.start_frame)


def plan_long_edit(args: argparse.Namespace, checked: Checked, free_ram: int) -> LongEdit | None:
    """The segments of the edit (see the module docstring), None when one holds it. `free_ram`: bytes free
    on the machine (the least of the servers') that runs the segments. Refuses an output that cannot be
    joined from parts (gif, animated webp)."""
    clip = checked.clip
    total = edited_frames(args, checked)
    if args.segment == "auto":
        height, width = fitted_size(clip.height, clip.width, args.size, SIZE_MULTIPLE, FIT.default)
        latent = (height // 8, width // 8)
        cache = (
            store_bytes(1, args.steps, latent)
            if args.cache_mode == STORE
            else recompute_bytes(1, args.steps, latent)
        )
        per_frame = host_bytes_per_frame(height, width, cache, bool(args.compare))
        length = segment_frames(free_ram, per_frame, total)
        chosen = f"auto, {byte_size(per_frame)} a frame, {byte_size(free_ram)} free RAM"
    else:
        length, chosen = int(args.segment), "as asked"
    segments = plan_segments(total, length)
    if len(segments) == 1:
        return None
    for flag, fmt in zip(("--output", "--compare"), checked.formats, strict=False):
        if FORMATS[fmt].codec is None and (flag == "--output" or args.compare) and not args.preview:
            raise InputRefusedError(
                f"{flag}: a {FORMATS[fmt].extension} is written whole in memory, and this edit of {total} frames runs "
                f"in {len(segments)} segments: write an mp4, webm or mkv, or give --segment 0 to edit it at once"
            )
    return LongEdit(args, checked, total, length, chosen, segments)
